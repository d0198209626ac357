"""schemathesis hooks for scripts/schemathesis.

WhatsApp webhook bodies name the demo number of `faro dev` and are signed
with its (public, development-only) app secret, as Meta signs them, so the
fuzzed bodies pass verification and reach ingest: the edge's answer to a
verified delivery is fuzzed too, not only its refusals. A case whose
signature header the fuzzer deliberately left out or malformed
(negative mode) is left as generated.
"""

import hashlib
import hmac
import json
import os
import re

import schemathesis

APP_SECRET = os.environ.get("FARO_SCHEMATHESIS_APP_SECRET", "demo-app-secret").encode()
NUMBER = os.environ.get("FARO_SCHEMATHESIS_NUMBER", "100000000000001")
WELL_FORMED = re.compile(r"^sha256=[0-9a-f]{64}$")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.method.upper() != "POST" or case.operation.path != "/api/v1/webhooks/whatsapp":
        return
    headers = case.headers or {}
    if not isinstance(case.body, dict) or not WELL_FORMED.match(str(headers.get("X-Hub-Signature-256", ""))):
        return
    body = dict(case.body)
    entries = body.get("entry") if isinstance(body.get("entry"), list) else []
    ours = {"changes": [{"value": {"metadata": {"phone_number_id": NUMBER}}}]}
    body["entry"] = [ours, *entries]
    raw = json.dumps(body).encode()
    case.body = raw
    headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(APP_SECRET, raw, hashlib.sha256).hexdigest()
    case.headers = headers
