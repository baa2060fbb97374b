//! Tests of the OpenQASM 2 front end: what parses, what is refused and how circuits linearize.

use super::*;

const HEADER: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\n";

fn error(source: &str) -> String {
    parse(source).unwrap_err().to_string()
}

#[test]
fn linearizes_library_gates_to_u_and_cx() {
    let circuit = parse(&format!("{HEADER}qreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n")).unwrap();
    assert_eq!((circuit.num_qubits, circuit.num_clbits), (2, 2));
    assert!(matches!(circuit.instructions[0].operation, Operation::U { qubit: 0, .. }));
    assert_eq!(circuit.instructions[1].operation, Operation::Cx { control: 0, target: 1 });
    assert_eq!(circuit.instructions[2].operation, Operation::Measure { qubit: 0, clbit: 0 });
    let conditioned = parse(&format!("{HEADER}qreg q[1];\ncreg a[1];\ncreg b[2];\nif (b==2) x q[0];\n")).unwrap();
    assert_eq!(conditioned.instructions[0].condition, Some(Condition { offset: 1, width: 2, value: 2 }));
}

#[test]
fn reports_syntax_errors_with_line_and_column() {
    let message = error(&format!("{HEADER}qreg q[1];\nh q[0]\nmeasure q -> c;\n"));
    assert!(message.starts_with("line 5, column 1: unexpected `measure`"), "{message}");
    assert_eq!(error("  "), "empty program");
    assert!(error("OPENQASM 2.0;\nqreg q[1];\n$").starts_with("line 3, column 1: invalid token"));
}

#[test]
fn reports_type_errors_with_the_name_at_fault() {
    let message = error(&format!("{HEADER}qreg q[1];\nfoo q[0];\n"));
    assert_eq!(message, "line 4, column 1: unknown gate `foo`");
    assert!(error(&format!("{HEADER}qreg q[1];\nh r[0];\n")).contains("undefined register `r`"));
    assert!(error(&format!("{HEADER}qreg q[1];\nh q[3];\n")).contains("index 3 is out of range for `q` of size 1"));
}

#[test]
fn enforces_the_limits_before_allocating() {
    assert_eq!(error("OPENQASM 2.0;\nqreg q[21];\n"), "circuit uses 21 qubits, the simulator limit is 20");
    assert_eq!(
        error("OPENQASM 2.0;\nqreg q[4000000000];\n"),
        "circuit uses 4000000000 qubits, the simulator limit is 20"
    );
    assert_eq!(error("OPENQASM 2.0;\nqreg q[1];\ncreg c[65];\n"), "circuit uses 65 classical bits, the limit is 64");
    assert!(error(&"x".repeat(MAX_SOURCE_BYTES + 1)).starts_with("program is 262145 bytes"));
    // Each level doubles the gate count: 2^25 operations.
    let mut source = String::from("OPENQASM 2.0;\nqreg q[1];\ngate g0 a { U(0,0,0) a; }\n");
    for level in 1..=25 {
        source.push_str(&format!("gate g{level} a {{ g{} a; g{} a; }}\n", level - 1, level - 1));
    }
    source.push_str("g25 q[0];\n");
    assert_eq!(
        error(&source),
        format!("expanded size of the program exceeds the limit of {MAX_OPERATIONS} operations")
    );
}

/// `levels` gate definitions, each applying the previous one twice, `g0` being `body`.
fn doubling(levels: usize, body: &str) -> String {
    let mut source = format!("OPENQASM 2.0;\nqreg q[20];\ncreg c[20];\ngate g0 a {{ {body} }}\n");
    for level in 1..=levels {
        source.push_str(&format!("gate g{level} a {{ g{} a; g{} a; }}\n", level - 1, level - 1));
    }
    source
}

#[test]
fn the_expanded_size_is_bounded_before_anything_is_expanded() {
    // The bomb of the issue: 2^48 applications. Refused from the syntax tree, at once.
    let started = std::time::Instant::now();
    let bomb = format!("{}g48 q[0];\n", doubling(48, "U(0,0,0) a;"));
    assert_eq!(error(&bomb), "expanded size of the program exceeds the limit of 1000000 operations");
    // Deeper than u64 holds: the count saturates instead of wrapping to something small.
    let deeper = format!("{}g70 q[0];\n", doubling(70, "U(0,0,0) a;"));
    assert!(error(&deeper).starts_with("expanded size"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    // Barriers count, though the simulator has nothing to do for them.
    let barriers = format!("{}g20 q[0];\n", doubling(20, "barrier a;"));
    assert!(error(&barriers).starts_with("expanded size"));
    // A broadcast multiplies: 2^16 applications fit once, not over 20 qubits.
    assert_eq!(parse(&format!("{}g16 q[0];\n", doubling(16, "U(0,0,0) a;"))).unwrap().instructions.len(), 65_536);
    assert!(error(&format!("{}g16 q;\n", doubling(16, "U(0,0,0) a;"))).starts_with("expanded size"));
    // So does a conditioned one.
    assert!(error(&format!("{}if (c==0) g16 q;\n", doubling(16, "U(0,0,0) a;"))).starts_with("expanded size"));
}

#[test]
fn long_expressions_count_each_time_they_are_evaluated() {
    // 2^levels applications of a U whose angles have 3 * (2 * terms - 1) terms.
    let applied = |levels: usize, terms: usize| {
        let expr = vec!["p"; terms].join("+");
        let mut source = format!("OPENQASM 2.0;\nqreg q[1];\ngate g0(p) a {{ U({expr}, {expr}, {expr}) a; }}\n");
        for level in 1..=levels {
            source.push_str(&format!("gate g{level}(p) a {{ g{}(p) a; g{}(p) a; }}\n", level - 1, level - 1));
        }
        source.push_str(&format!("g{levels}(1) q[0];\n"));
        source
    };
    // Half a million operations, well under their limit, but 250 million terms to evaluate.
    assert_eq!(
        error(&applied(19, 80)),
        format!("expanded program evaluates more than {MAX_EXPRESSION_TERMS} terms of angle expressions")
    );
    assert_eq!(parse(&applied(10, 80)).unwrap().instructions.len(), 1024);
}

#[test]
fn the_static_count_is_what_the_linearizer_writes() {
    let source = format!(
        "{HEADER}qreg q[3];\ncreg c[3];\ngate bell a, b {{ h a; cx a, b; }}\ngate twice a, b {{ bell a, b; bell b, a; }}\n\
         h q;\ntwice q[0], q[1];\nif (c==1) ccx q[0], q[1], q[2];\nreset q;\nmeasure q -> c;\n"
    );
    let program = parse_program(&mut SourceCache::new(), &source).unwrap();
    assert_eq!(expanded_size(&program), parse(&source).unwrap().instructions.len() as u64);
}

#[test]
fn deep_nesting_is_refused_or_survived_never_a_crash() {
    let sum = format!("{HEADER}qreg q[1];\nU({}1, 0, 0) q[0];\n", "1+".repeat(100_000));
    assert_eq!(error(&sum), "line 4: statement has more than 256 operators");
    let parens = format!("{HEADER}qreg q[1];\nU({}0{}, 0, 0) q[0];\n", "(".repeat(300), ")".repeat(300));
    assert_eq!(error(&parens), "line 4: statement has more than 256 operators");
    // A chain of 8000 gate definitions (most that fit the size limit), each calling the previous one, recurses 8000 deep.
    let mut chain = String::from("OPENQASM 2.0;\nqreg q[1];\ngate g0 a { U(0,0,0) a; }\n");
    for level in 1..8000 {
        chain.push_str(&format!("gate g{level} a {{ g{} a; }}\n", level - 1));
    }
    chain.push_str("g7999 q[0];\n");
    assert_eq!(parse(&chain).unwrap().instructions.len(), 1);
}

#[test]
fn hostile_numbers_are_refused() {
    for body in [
        "qreg q[99999999999999999999999999];",
        "qreg q[1];\nU(1e99999, 0, 0) q[0];",
        "qreg q[1];\nU(1/0, 0, 0) q[0];",
        "qreg q[1];\ncreg c[1];\nif (c==99999999999999999999999) U(0,0,0) q[0];",
        "qreg q[1];\ncreg c[1];\nif (c==5) U(0,0,0) q[0];",
        "qreg q[2];\nCX q[0],q[0];",
    ] {
        let source = format!("OPENQASM 2.0;\n{body}\n");
        assert!(parse(&source).is_err(), "{body}");
    }
}

#[test]
fn only_the_standard_library_can_be_included() {
    let message = error("OPENQASM 2.0;\ninclude \"/etc/passwd\";\nqreg q[1];\n");
    assert!(message.contains("cannot include `/etc/passwd`: only qelib1.inc can be included"), "{message}");
    let opaque = error("OPENQASM 2.0;\nopaque magic a;\nqreg q[1];\nmagic q[0];\n");
    assert_eq!(opaque, "opaque gate `magic` cannot be simulated");
}
