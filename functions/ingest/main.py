"""Cloud Function ingest: the authenticated HTTP endpoint stores send their files to.

POST the file as the body with ``Authorization: Bearer <token>`` (an uploader's or operator's token
from the token map, see ``batchcast.ops.tokens``); optional query parameters
``dataset``, ``mapping`` and ``format`` (csv or avro). The file lands in raw/ (which triggers
partition) and the response previews what partition will accept and reject.
"""

import flask
import functions_framework

from batchcast.entrypoints import runtime
from batchcast.ops.tokens import TokenStore
from batchcast.steps.ingest import handle_upload


@functions_framework.http
def ingest(request: flask.Request) -> flask.Response:
    """Store one upload and answer with the validation preview."""
    deployment = runtime.from_env()
    # A store per request: uploads are rare and large, so re-reading the small map costs nothing
    # and a revoked uploader is refused at once.
    tokens = TokenStore(deployment.ports.blobs, deployment.settings.api_tokens, ttl=0)
    response = handle_upload(
        deployment.ports.blobs,
        deployment.ports.clock,
        tokens,
        method=request.method,
        headers=request.headers,
        args=request.args,
        body=request.get_data(),
    )
    return flask.jsonify(response.body), response.status
