"""Checks CADF-JSON events against pyCADF, the reference implementation of DMTF DSP0262.

Reads one JSON event per line on stdin. Each event is rebuilt from pyCADF's own types, whose
attribute validators reject values outside the CADF taxonomies (action, outcome, resource
typeURI, reason) on assignment; then the event must pass Event.is_valid() and pyCADF must
serialise it back to exactly the document it was given. Prints "ok <n>" or the first problem.
"""

import json
import sys
import warnings

from pycadf import attachment, event, host, reason, resource

# pyCADF warns (without failing) for identifiers that are not UUIDs, such as CRNs and IAM ids.
warnings.simplefilter("ignore", UserWarning)

EVENT_KEYS = {
    "typeURI", "eventType", "id", "eventTime", "action", "outcome", "severity", "name",
    "observer", "initiator", "target", "reason", "tags", "attachments",
}
RESOURCE_KEYS = {"id", "typeURI", "name", "host"}


def build_resource(doc):
    unknown = set(doc) - RESOURCE_KEYS
    if unknown:
        raise ValueError(f"resource has keys pyCADF does not model here: {sorted(unknown)}")
    h = doc.get("host")
    return resource.Resource(
        id=doc["id"],
        typeURI=doc["typeURI"],
        name=doc.get("name"),
        host=host.Host(address=h.get("address"), agent=h.get("agent")) if h else None,
    )


def check(doc):
    unknown = set(doc) - EVENT_KEYS
    if unknown:
        raise ValueError(f"event has keys outside CADF: {sorted(unknown)}")
    if doc["typeURI"] != event.TYPE_URI_EVENT:
        raise ValueError(f"typeURI {doc['typeURI']!r}")
    ev = event.Event(
        eventType=doc["eventType"],
        id=doc["id"],
        eventTime=doc["eventTime"],
        action=doc["action"],
        outcome=doc["outcome"],
        initiator=build_resource(doc["initiator"]),
        target=build_resource(doc["target"]),
        observer=build_resource(doc["observer"]),
        severity=doc["severity"],
        reason=reason.Reason(reasonType=doc["reason"]["reasonType"], reasonCode=doc["reason"]["reasonCode"]),
        name=doc["name"],
    )
    for tag in doc.get("tags", []):
        ev.add_tag(tag)
    for item in doc.get("attachments", []):
        ev.add_attachment(attachment.Attachment(typeURI=item["typeURI"], content=item["content"], name=item["name"]))
    if not ev.is_valid():
        raise ValueError("Event.is_valid() is false")
    if ev.as_dict() != doc:
        raise ValueError(f"pyCADF serialises it differently: {json.dumps(ev.as_dict(), sort_keys=True)}")


def main():
    count = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            check(json.loads(line))
        except Exception as err:  # report any failure with the line it came from
            print(f"line {number}: {type(err).__name__}: {err}")
            return 1
        count += 1
    print(f"ok {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
