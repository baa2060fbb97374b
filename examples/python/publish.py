#!/usr/bin/env python3
"""Publishes a few audit events to a qtrail collector over qtrail.audit.v1.Ingest/Publish.

The Python example of docs/publishing.md: a service written in another language than Rust
speaks the Publish protocol itself. It generates its gRPC stubs from the repository's proto/
with grpcio-tools, opens one stream, sends Hello, waits for the Welcome, sends one Batch and
waits for its Ack. Event ids and seqs derive from --publisher-id, so a second run with the same
arguments and a fixed --event-time-ms resends the same events, which the collector counts as
duplicates (an event id sent again with other content would be rejected as conflicting).

    python3 examples/python/publish.py --collector 127.0.0.1:7000 --token <publisher token>

Prints `welcome stored_seq=<n>` and `ack accepted=<n> duplicates=<n> rejected=<n>`; exits
non-zero when the stream fails or an event is rejected.
"""

import argparse
import pathlib
import queue
import sys
import tempfile
import time
import uuid

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load_stubs(out):
    """Generates the Python stubs of proto/ into the directory `out` and imports them."""
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(path) for path in (PROTO_DIR / "qtrail" / "audit" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit("cannot generate the gRPC stubs from proto/")
    sys.path.insert(0, out)
    from qtrail.audit.v1 import collector_pb2, collector_pb2_grpc, event_pb2

    return collector_pb2, collector_pb2_grpc, event_pb2


def audit_event(event_pb2, args, n):
    """Returns the n-th event: a job this service created in its instance of the location."""
    instance = f"crn:v1:bluemix:public:quantum-computing:{args.location}:a/acc-python:{args.publisher_id}"
    job = f"job-{n}"
    event = event_pb2.AuditEvent(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"qtrail-example:{args.publisher_id}:{n}")),
        action="quantum-computing.job.create",
        outcome=event_pb2.OUTCOME_SUCCESS,
        severity=event_pb2.SEVERITY_NORMAL,
        data_event=True,
        initiator=event_pb2.Initiator(
            id="iam-ServiceId-python-example",
            name="python-example",
            type_uri="service/security/account/serviceid",
            credential_type="apikey-serviceid",
            host_address="127.0.0.1",
            host_agent=f"grpc-python/{grpc.__version__}",
        ),
        target=event_pb2.Target(id=f"{instance}:job:{job}", name=job, type_uri="quantum-computing/job"),
        reason=event_pb2.Reason(reason_code=200, reason_type="OK"),
        log_source_crn=f"{instance}::",
        message=f"Qiskit Runtime: create job {job}",
    )
    event.event_time.FromMilliseconds(args.event_time_ms)
    return event



def expect(response, kind):
    """Returns the `kind` message of a PublishResponse, or exits if the collector sent another."""
    if not response.HasField(kind):
        sys.exit(f"expected a {kind} from the collector, got: {response}")
    return getattr(response, kind)

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", required=True, help="host:port of the collector (plaintext)")
    parser.add_argument("--token", required=True, help="a publisher token for the location")
    parser.add_argument("--location", default="us-east")
    parser.add_argument("--publisher-id", default="python-example")
    parser.add_argument("--count", type=int, default=3, help="events in the batch")
    parser.add_argument("--event-time-ms", type=int, default=time.time_ns() // 1_000_000, help="Unix ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qtrail-stubs-") as out:
        collector_pb2, collector_pb2_grpc, event_pb2 = load_stubs(out)

    # The request stream: Hello first, the Batch only after the Welcome, then the end.
    requests = queue.Queue()
    # A collector on this host must not be reached through an HTTP proxy of the environment.
    with grpc.insecure_channel(args.collector, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = collector_pb2_grpc.IngestStub(channel)
        responses = stub.Publish(
            iter(requests.get, None), metadata=[("authorization", f"Bearer {args.token}")], timeout=30
        )
        try:
            hello = collector_pb2.Hello(publisher_id=args.publisher_id, location=args.location, epoch=1)
            requests.put(collector_pb2.PublishRequest(hello=hello))
            welcome = expect(next(responses), "welcome")
            print(f"welcome stored_seq={welcome.stored_seq}")
            # A real publisher drops what the Welcome says is stored; this one resends it all to
            # show that the collector stores an event id once.
            batch = collector_pb2.Batch(batch_seq=1)
            for seq in range(1, args.count + 1):
                batch.events.add(seq=seq, event=audit_event(event_pb2, args, seq).SerializeToString())
            requests.put(collector_pb2.PublishRequest(batch=batch))
            ack = expect(next(responses), "ack")
        except grpc.RpcError as err:
            sys.exit(f"publish failed: {err.code().name}: {err.details()}")
        finally:
            requests.put(None)
    print(f"ack accepted={ack.accepted} duplicates={ack.duplicates} rejected={len(ack.rejected)}")
    for rejected in ack.rejected:
        print(f"rejected seq {rejected.seq} ({rejected.event_id}): {rejected.reason}", file=sys.stderr)
    return 1 if ack.rejected or ack.batch_seq != 1 else 0


if __name__ == "__main__":
    sys.exit(main())
