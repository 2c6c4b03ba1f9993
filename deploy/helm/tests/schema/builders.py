"""What both values schemas are built from (draft-07 fragments), and how
they are written: python3 <chart>.py OUT."""
import json
import sys

S = lambda **k: dict(type="string", **k)
B = lambda **k: dict(type="boolean", **k)
I = lambda **k: dict(type="integer", **k)
N = lambda **k: dict(type="number", **k)
A = lambda items=None, **k: dict(type="array", **({"items": items} if items else {}), **k)


def O(props=None, extra=False, req=None, **k):
    d = dict(type="object")
    if props is not None:
        d["properties"] = props
    d["additionalProperties"] = extra
    if req:
        d["required"] = req
    d.update(k)
    return d


MAP = O(None, True)
DUR = S(pattern=r"^[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+)*$", description="a humantime duration, e.g. 30s, 5m, 7d")
QTY = {"anyOf": [S(), N()]}


def resources(**k):
    """Container resources: requests and limits, each with cpu and memory."""
    return O({"requests": O({"cpu": QTY, "memory": QTY}, req=["cpu", "memory"]),
              "limits": O({"cpu": QTY, "memory": QTY}, req=["cpu", "memory"])},
             req=["requests", "limits"], **k)


def write(schema):
    with open(sys.argv[1], "w") as f:
        json.dump(schema, f, indent=2)
        f.write("\n")
