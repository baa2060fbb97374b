// Command tlog-interop checks a qtrail collector's transparency log with Go's reference
// implementations, golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, and nothing of
// ours: it fetches /tlog/<location>/key and /checkpoint, opens the note, reads the C2SP tiles
// through tlog.TileHashReader (which checks every tile against the signed tree), and checks an
// inclusion proof of every leaf of every entry bundle, plus a consistency proof from an older
// checkpoint note kept by the caller. The note is verified with the key the caller passes
// (-vkey, computed from the public key), which the served /key must equal. With -witness-vkey,
// the served checkpoint must also carry a valid C2SP tlog-cosignature (cosignature/v1, Ed25519)
// by that witness, checked here with crypto/ed25519 from the spec alone.
//
// With -proof FILE it also checks a C2SP tlog-proof file (as `qtrail events prove` writes it),
// parsed here from the spec: the checkpoint note's signature, then tlog.CheckRecord of
// tlog.RecordHash(extra) at the index. Without -url it checks only that file, offline.
//
// Built in GOPATH mode (GO111MODULE=off, GOPATH=/usr/share/gocode from the Debian packages
// golang-go and golang-golang-x-mod-dev): no network. Exits non-zero, saying why, on any failure.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type server struct {
	base  string
	token string
}

func (s server) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", s.base+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// c2spIndex writes a tile index as C2SP tlog-tiles does: x001/x234/067.
func c2spIndex(n int64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	return s
}

// c2spPath is the C2SP path of a Go tile (Go's own paths carry the height; C2SP's do not).
func c2spPath(t tlog.Tile) string {
	level := strconv.Itoa(t.L)
	if t.L == -1 {
		level = "entries"
	}
	p := "tile/" + level + "/" + c2spIndex(t.N)
	if t.W != 1<<t.H {
		p += fmt.Sprintf(".p/%d", t.W)
	}
	return p
}

// tiles reads C2SP tiles for tlog.TileHashReader and records their paths.
type tiles struct {
	s    server
	read *[]string
}

func (t tiles) Height() int { return 8 }

func (t tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(ts))
	for i, tile := range ts {
		b, err := t.s.get(c2spPath(tile))
		if err != nil {
			return nil, err
		}
		*t.read = append(*t.read, c2spPath(tile))
		data[i] = b
	}
	return data, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// openCheckpoint verifies a signed checkpoint note and returns its tree.
func openCheckpoint(msg []byte, verifier note.Verifier, origin string) (tlog.Tree, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("note.Open: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != origin {
		return tlog.Tree{}, fmt.Errorf("not a checkpoint of %s: %q", origin, n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("bad size: %v", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, fmt.Errorf("bad root %q", lines[2])
	}
	var hash tlog.Hash
	copy(hash[:], root)
	return tlog.Tree{N: size, Hash: hash}, nil
}

// checkCosignature finds the cosignature of the witness whose verifier key is vkey
// (<name>+<hex key id>+<base64(0x04 || Ed25519 public key)>) on the signed note msg and checks it
// per C2SP tlog-cosignature: key id SHA-256(name || "\n" || 0x04 || key)[:4], signature bytes
// key id || big-endian u64 timestamp || Ed25519 signature of
// "cosignature/v1\ntime <timestamp>\n" + the note text. Returns the timestamp.
func checkCosignature(msg []byte, vkey string) (string, uint64, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return "", 0, fmt.Errorf("witness vkey %q is not name+id+key", vkey)
	}
	name := parts[0]
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != 0x04 {
		return "", 0, fmt.Errorf("witness vkey %q is not a cosignature/v1 ed25519 key", vkey)
	}
	digest := sha256.Sum256(append([]byte(name+"\n"), key...))
	id := digest[:4]
	if hex.EncodeToString(id) != parts[1] {
		return "", 0, fmt.Errorf("witness vkey %q: key id does not match", vkey)
	}
	split := bytes.LastIndex(msg, []byte("\n\n"))
	if split < 0 {
		return "", 0, fmt.Errorf("the checkpoint is not a signed note")
	}
	text := msg[:split+1]
	for _, line := range strings.Split(strings.TrimSuffix(string(msg[split+2:]), "\n"), "\n") {
		prefix := "\u2014 " + name + " "
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		encoded := strings.TrimPrefix(line, prefix)
		sig, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil || len(sig) != 4+8+ed25519.SignatureSize || !bytes.Equal(sig[:4], id) {
			continue
		}
		timestamp := binary.BigEndian.Uint64(sig[4:12])
		signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", timestamp)), text...)
		if !ed25519.Verify(ed25519.PublicKey(key[1:]), signed, sig[12:]) {
			return "", 0, fmt.Errorf("the cosignature of %s does not verify", name)
		}
		return name, timestamp, nil
	}
	return "", 0, fmt.Errorf("the checkpoint carries no cosignature of %s", name)
}

// entries fetches entry bundle n of a tree of size leaves and splits it.
func entries(s server, n, size int64) ([][]byte, error) {
	width := size - n*256
	if width > 256 {
		width = 256
	}
	bundle, err := s.get(c2spPath(tlog.Tile{H: 8, L: -1, N: n, W: int(width)}))
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for len(bundle) > 0 {
		if len(bundle) < 2 {
			return nil, fmt.Errorf("truncated bundle")
		}
		l := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+l {
			return nil, fmt.Errorf("truncated entry")
		}
		out = append(out, bundle[2:2+l])
		bundle = bundle[2+l:]
	}
	if int64(len(out)) != width {
		return nil, fmt.Errorf("bundle %d holds %d entries, not %d", n, len(out), width)
	}
	return out, nil
}

// proveBundle checks an inclusion proof of every entry of bundle n.
func proveBundle(s server, tree tlog.Tree, hr tlog.HashReader, n int64) (int, error) {
	leaves, err := entries(s, n, tree.N)
	if err != nil {
		return 0, err
	}
	for i, leaf := range leaves {
		index := n*256 + int64(i)
		proof, err := tlog.ProveRecord(tree.N, index, hr)
		if err != nil {
			return 0, fmt.Errorf("ProveRecord(%d, %d): %v", tree.N, index, err)
		}
		if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, tlog.RecordHash(leaf)); err != nil {
			return 0, fmt.Errorf("CheckRecord(%d): %v", index, err)
		}
	}
	return len(leaves), nil
}

// checkProofFile checks a C2SP tlog-proof (https://c2sp.org/tlog-proof) whose extra data is the
// entry itself: the note signed by verifier for origin, and the entry included at the index.
func checkProofFile(path string, verifier note.Verifier, origin string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	head, checkpoint, ok := strings.Cut(string(data), "\n\n")
	if !ok {
		return fmt.Errorf("proof: no blank line before the checkpoint")
	}
	lines := strings.Split(head, "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return fmt.Errorf("proof: bad header %q", lines[0])
	}
	lines = lines[1:]
	var extra []byte
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		if extra, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra ")); err != nil {
			return fmt.Errorf("proof: bad extra: %v", err)
		}
		lines = lines[1:]
	}
	if extra == nil {
		return fmt.Errorf("proof: no extra line: the entry is not in the proof")
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return fmt.Errorf("proof: no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil {
		return fmt.Errorf("proof: bad index: %v", err)
	}
	var proof tlog.RecordProof
	for _, line := range lines[1:] {
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(b) != tlog.HashSize {
			return fmt.Errorf("proof: bad hash line %q", line)
		}
		var h tlog.Hash
		copy(h[:], b)
		proof = append(proof, h)
	}
	tree, err := openCheckpoint([]byte(checkpoint), verifier, origin)
	if err != nil {
		return fmt.Errorf("proof: %v", err)
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, tlog.RecordHash(extra)); err != nil {
		return fmt.Errorf("proof: CheckRecord(%d in %d): %v", index, tree.N, err)
	}
	fmt.Printf("proof ok: index %d in size %d, %d hashes\n", index, tree.N, len(proof))
	return nil
}

func run() error {
	base := flag.String("url", "", "base URL of the log, e.g. http://127.0.0.1:7480/tlog/us-east")
	origin := flag.String("origin", "", "the log's origin, e.g. qtrail.local/us-east")
	token := flag.String("token", "", "auditor token, when tiles are not public")
	oldNote := flag.String("old-checkpoint", "", "file holding an older signed checkpoint note")
	vkey := flag.String("vkey", "", "the verifier key the caller trusts (computed from the public key)")
	proofFile := flag.String("proof", "", "a C2SP tlog-proof file whose extra data is the entry")
	witnessVkey := flag.String("witness-vkey", "", "a witness's cosignature verifier key the checkpoint must carry a cosignature of")
	flag.Parse()
	s := server{base: strings.TrimRight(*base, "/"), token: *token}

	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		return fmt.Errorf("note.NewVerifier(-vkey): %v", err)
	}
	if *proofFile != "" {
		if err := checkProofFile(*proofFile, verifier, *origin); err != nil {
			return err
		}
	}
	if *base == "" {
		return nil
	}
	served, err := s.get("key")
	if err != nil {
		return err
	}
	if got := string(bytes.TrimSpace(served)); got != *vkey {
		return fmt.Errorf("the served key %q is not the trusted one %q", got, *vkey)
	}
	if verifier.Name() != *origin {
		return fmt.Errorf("key names %q, not %q", verifier.Name(), *origin)
	}
	msg, err := s.get("checkpoint")
	if err != nil {
		return err
	}
	tree, err := openCheckpoint(msg, verifier, *origin)
	if err != nil {
		return err
	}
	if tree.N == 0 {
		return fmt.Errorf("the checkpoint covers no leaves")
	}
	var read []string
	hr := tlog.TileHashReader(tree, tiles{s, &read})
	root, err := tlog.TreeHash(tree.N, hr)
	if err != nil || root != tree.Hash {
		return fmt.Errorf("TreeHash from tiles: %v (%v, want %v)", err, root, tree.Hash)
	}
	bundles, proved := int64(0), 0
	for n := int64(0); n*256 < tree.N; n++ {
		count, err := proveBundle(s, tree, hr, n)
		if err != nil {
			return err
		}
		bundles, proved = bundles+1, proved+count
	}
	fmt.Printf("checkpoint ok: %s size %d root %s\n", *origin, tree.N, tree.Hash)
	if *witnessVkey != "" {
		name, timestamp, err := checkCosignature(msg, *witnessVkey)
		if err != nil {
			return err
		}
		fmt.Printf("cosignature ok: %s time %d\n", name, timestamp)
	}
	fmt.Printf("inclusion ok: %d bundles, %d leaves proved\n", bundles, proved)

	if *oldNote != "" {
		oldMsg, err := os.ReadFile(*oldNote)
		if err != nil {
			return err
		}
		old, err := openCheckpoint(oldMsg, verifier, *origin)
		if err != nil {
			return fmt.Errorf("old checkpoint: %v", err)
		}
		proof, err := tlog.ProveTree(tree.N, old.N, hr)
		if err != nil {
			return fmt.Errorf("ProveTree(%d, %d): %v", tree.N, old.N, err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, old.N, old.Hash); err != nil {
			return fmt.Errorf("CheckTree(%d, %d): %v", tree.N, old.N, err)
		}
		fmt.Printf("consistency ok: %d -> %d\n", old.N, tree.N)
	}
	fmt.Printf("tiles read: %s\n", strings.Join(read, " "))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlog-interop:", err)
		os.Exit(1)
	}
}
