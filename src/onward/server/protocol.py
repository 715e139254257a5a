"""The decisions of the upload server, as pure functions: a parsed request and an upload's record
in, a response value (status, headers, body) or a plan of what to do out.

As h11 separates the rules of HTTP/1.1 from sockets, this module holds every rule of
tus 1.0.0 and draft-ietf-httpbis-resumable-upload the server applies: which requests are
allowed, which offsets and lengths are consistent, when an upload is complete, which
status answers what (the headers themselves are composed in ``onward.server.answers``). A refusal is raised as
``Reject`` (``answers.refusal`` turns it into the response). Nothing here touches a socket, a file
or a clock (``now`` is an argument): ``onward.server.app`` asks and carries out.
"""

from __future__ import annotations

from . import answers
from .answers import IETF_CONTENT_TYPE, TUS_CONTENT_TYPE
from .headers import (
    IETF_VERSIONS,
    TUS_VERSION,
    Checksum,
    Reject,
    digest_field,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_sf_boolean,
    parse_sf_integer,
    parse_tus_integer,
    valid_id,
)
from .model import Action, Answer, Append, BodyEnd, Creation, Headers, Request, Rules
from .storage import Upload

__all__ = [
    "after_body",
    "appended",
    "created",
    "data_limit",
    "deleted",
    "final_length",
    "gate",
    "ietf_completion",
    "ietf_creation",
    "ietf_patch",
    "interim_headers",
    "live",
    "needs_recovery",
    "route",
    "state",
    "tus_creation",
    "tus_creation_data",
    "tus_patch",
]

# --- before anything: the protocol, OPTIONS, routing ---------------------------------------


def gate(request: Request, rules: Rules, cors: bool) -> Answer | None:
    """The answer to a request that needs no upload (OPTIONS, a missing Tus-Resumable), else None
    when the request may go on; raises ``Reject`` for a bad protocol version."""
    if request.method == "OPTIONS":
        if cors and "access-control-request-method" in request.headers:
            return Answer(204, answers.preflight(request.header("access-control-request-headers")))
        return Answer(204, answers.capabilities(rules))
    if request.ietf is None and "upload-draft-interop-version" in request.headers:
        raise Reject(400, "Upload-Draft-Interop-Version must be an integer")
    if request.ietf is not None and request.ietf not in IETF_VERSIONS:
        raise Reject(400, f"Upload-Draft-Interop-Version {request.ietf} is not supported (6 or 8)")
    if request.ietf is None and request.header("tus-resumable") != TUS_VERSION:
        body = b"Tus-Resumable: 1.0.0 is required (or Upload-Draft-Interop-Version for the IETF protocol)\n"
        return Answer(412, (("Tus-Version", TUS_VERSION), ("Content-Type", "text/plain")), body)
    return None


def route(request: Request) -> Action:
    """The action a request that passed ``gate`` and authentication asks for."""
    if request.target == "":
        if request.method == "POST" or (request.method == "PUT" and request.ietf is not None):
            return Action.CREATE_TUS if request.ietf is None else Action.CREATE_IETF
        raise Reject(405, f"{request.method} is not allowed here")
    if not valid_id(request.target):
        raise Reject(404, "no such upload")
    actions = {"HEAD": Action.HEAD, "PATCH": Action.PATCH, "DELETE": Action.DELETE}
    if request.method not in actions:
        raise Reject(405, f"{request.method} is not allowed on an upload")
    return actions[request.method]


def live(upload: Upload | None, now: float) -> Upload:
    """The upload a request may use: it exists, its data is whole, it has not expired."""
    if upload is None:
        raise Reject(404, "no such upload")
    if upload.lost:
        raise Reject(410, "this server lost part of the upload's data; start a new upload")
    if now > upload.expires:
        raise Reject(410, "the upload expired")
    return upload


# --- creation -----------------------------------------------------------------------------


def tus_creation(request: Request, rules: Rules) -> Creation:
    """A tus POST's headers: a final concatenation (complete, no data), or an upload whose
    length or deferral is known, its data still to be looked at (``tus_creation_data``)."""
    concat = parse_concat(request.header("upload-concat"), rules.base)
    length = parse_tus_integer(request.header("upload-length"), "Upload-Length")
    defer = request.header("upload-defer-length")
    if defer is not None and defer.strip() != "1":
        raise Reject(400, "Upload-Defer-Length must be 1")
    metadata = parse_metadata(request.header("upload-metadata"))
    if concat is not None and concat[0] == "final":
        if length is not None or defer is not None:
            raise Reject(400, "a final upload (Upload-Concat: final) takes its length from its parts")
        return Creation(None, metadata, 0, "final", tuple(concat[1]))
    if (length is None) == (defer is None):
        raise Reject(400, "send exactly one of Upload-Length and Upload-Defer-Length: 1")
    rules.check_size(length)
    return Creation(length, metadata, request.body_length(), concat[0] if concat else None)


def tus_creation_data(request: Request, plan: Creation, has_data: bool) -> Creation:
    """The data of a tus creation request (``has_data``: a chunked body carries a byte)."""
    body = plan.body if plan.body is not None or has_data else 0
    if body != 0 and request.media_type() != TUS_CONTENT_TYPE:
        raise Reject(415, f"data sent with the creation request must be {TUS_CONTENT_TYPE}")
    if body and plan.length is not None and body > plan.length:
        raise Reject(413, "more data than Upload-Length")
    checksum = parse_checksum(request.header("upload-checksum"), None) if body != 0 else None
    return Creation(plan.length, plan.metadata, body, plan.concat, checksum=checksum)


def final_length(parts: list[Upload], rules: Rules) -> int:
    """The length of a concatenation of ``parts``, each of which must be a finished partial."""
    for part in parts:
        if part.concat != "partial" or not part.complete:
            raise Reject(400, f"upload {part.id} is not a finished partial upload (Upload-Concat: partial)")
    length = sum(p.offset for p in parts)
    rules.check_size(length)
    return length


def ietf_creation(request: Request, rules: Rules) -> Creation:
    """An IETF POST (or PUT): Upload-Complete is required; a complete one's length is its body's."""
    complete = parse_sf_boolean(request.header("upload-complete"))
    if complete is None:
        raise Reject(400, "Upload-Complete (?0 or ?1) is required to create an upload")
    length = parse_sf_integer(request.header("upload-length"))
    body = request.body_length()
    if complete and body is not None:
        if length is not None and length != body:
            raise Reject(400, "Upload-Length and Content-Length disagree", "inconsistent-upload-length")
        length = body
    if length is not None and body is not None and body > length:
        raise Reject(400, "more data than Upload-Length", "inconsistent-upload-length")
    rules.check_size(length)
    metadata = parse_metadata(request.header("upload-metadata"))
    checksum = parse_checksum(None, request.header("content-digest")) if body != 0 else None
    found = digest_field(request.header("repr-digest") or "")
    return Creation(
        length,
        metadata,
        body,
        checksum=checksum,
        complete=complete,
        content_type=request.header("content-type"),
        repr_digest=(found[0], found[1].hex()) if found else None,
    )


def interim_headers(request: Request, location: str, upload: Upload, rules: Rules, now: float) -> Headers:
    """The 104 Upload Resumption Supported sent before an IETF creation's data (the draft's SHOULD)."""
    return (
        ("Location", location),
        ("Upload-Draft-Interop-Version", str(request.ietf)),
        ("Upload-Limit", rules.limits(upload, now)),
    )


# --- append -------------------------------------------------------------------------------


def data_limit(upload: Upload, new_length: int | None, rules: Rules) -> int | None:
    """Where a request's data must stop: the length (or the one it sets), else the size cap."""
    for limit in (new_length, upload.length, rules.max_size):
        if limit is not None:
            return limit
    return None


def tus_patch(request: Request, upload: Upload, rules: Rules) -> Append | Answer:
    """A tus PATCH: the data to take, or the 409 that tells the client where the upload is."""
    if request.media_type().lower() != TUS_CONTENT_TYPE:
        raise Reject(415, f"PATCH data must be sent as {TUS_CONTENT_TYPE}")
    if upload.concat == "final":
        raise Reject(403, "a final upload (Upload-Concat: final) cannot be patched")
    offset = parse_tus_integer(request.header("upload-offset"), "Upload-Offset")
    if offset is None:
        raise Reject(400, "Upload-Offset is required")
    if offset != upload.offset:
        where = (("Tus-Resumable", TUS_VERSION), ("Upload-Offset", str(upload.offset)))
        return Answer(
            409, where, f"Upload-Offset is {offset} but the upload is at {upload.offset}\n".encode()
        )
    new_length = parse_tus_integer(request.header("upload-length"), "Upload-Length")
    if new_length == upload.length:
        new_length = None
    elif new_length is not None:
        if upload.length is not None:
            raise Reject(400, "Upload-Length cannot change once it is set")
        if new_length < upload.offset:
            raise Reject(400, "Upload-Length is smaller than what was already uploaded")
        rules.check_size(new_length)
    checksum = parse_checksum(request.header("upload-checksum"), None)
    body = request.body_length()
    limit = data_limit(upload, new_length, rules)
    if body is not None and limit is not None and upload.offset + body > limit:
        raise Reject(413, "the data goes past the upload's length")
    return Append(limit, checksum, new_length)


def ietf_patch(request: Request, upload: Upload, rules: Rules, now: float) -> Append | Answer:
    """An IETF PATCH: the data to take, or 200 for "it is complete" said of a complete upload."""
    if request.media_type().lower() != IETF_CONTENT_TYPE:
        raise Reject(415, f"PATCH data must be sent as {IETF_CONTENT_TYPE}")
    offset = parse_sf_integer(request.header("upload-offset"))
    complete = parse_sf_boolean(request.header("upload-complete"))
    if offset is None or complete is None:
        raise Reject(400, "Upload-Offset and Upload-Complete are required")
    body = request.body_length()
    if upload.complete:
        if complete and body == 0 and offset == upload.offset:  # "it is complete": it is
            return Answer(200, answers.ietf_state(upload, rules, now))
        raise Reject(400, "the upload is already complete", "completed-upload")
    if offset != upload.offset:
        raise Reject(
            409,
            "offset from request does not match offset of resource",
            "mismatching-upload-offset",
            members=(("expected-offset", upload.offset), ("provided-offset", offset)),
            headers=(("Upload-Offset", str(upload.offset)),),
        )
    length = _ietf_length(request, upload, complete, body, rules)
    new_length = length if upload.length is None else None
    limit = data_limit(upload, new_length, rules)
    if body is not None and limit is not None and upload.offset + body > limit:
        raise Reject(413, "the data goes past the upload's size limit")
    checksum = parse_checksum(None, request.header("content-digest"))
    return Append(limit, checksum, new_length, complete)


def _ietf_length(
    request: Request, upload: Upload, complete: bool, body: int | None, rules: Rules
) -> int | None:
    """The length an IETF PATCH states or implies (a complete one ends where its body does)."""
    length = parse_sf_integer(request.header("upload-length"))
    if complete and body is not None:
        implied = upload.offset + body
        if length is not None and length != implied:
            raise Reject(400, "Upload-Length and Content-Length disagree", "inconsistent-upload-length")
        length = implied
    if length is not None:
        if upload.length is not None and length != upload.length:
            raise Reject(400, "the upload's length cannot change", "inconsistent-upload-length")
        if length < upload.offset or (body is not None and upload.offset + body > length):
            raise Reject(400, "the data does not fit the upload's length", "inconsistent-upload-length")
        rules.check_size(length)
    return length


def after_body(
    end: BodyEnd, request: Request, checksum: Checksum | None, idle_timeout: float
) -> Answer | None:
    """What a request whose body ended as ``end`` is told, None when it goes on (data taken)."""
    if end is BodyEnd.BAD_CHECKSUM:
        raise Reject(checksum.mismatch_status if checksum else 460, "checksum mismatch: the data was dropped")
    if end is BodyEnd.TOO_LONG:
        if request.ietf is None:
            raise Reject(413, "the data goes past the upload's length")
        raise Reject(400, "the data goes past the upload's length", "inconsistent-upload-length")
    if end is BodyEnd.ENDED:
        raise Reject(409, "ended by a newer request to the same upload")
    if end is BodyEnd.TIMEOUT:
        raise Reject(408, f"no data for {idle_timeout:g} s; what arrived is kept")
    if end is BodyEnd.DISCONNECT:
        return Answer(400)  # nobody is listening
    return None


def ietf_completion(upload: Upload) -> bool:
    """Upload-Complete: ?1 is true of ``upload``; True when its length, unknown until now, is
    to be recorded as its offset."""
    if upload.length is not None and upload.length != upload.offset:
        raise Reject(
            400, "Upload-Complete: ?1 but the upload is shorter than its length", "inconsistent-upload-length"
        )
    return upload.length is None


def needs_recovery(upload: Upload) -> bool:
    """Whether a restart must finish ``upload``: all its data recorded but not promoted, or
    promoted without its hook (a finished partial is a piece: no promotion, no hook)."""
    if upload.lost or upload.hooked or (upload.complete and upload.concat == "partial"):
        return False
    return upload.promoted or upload.length == upload.offset


# --- answers ------------------------------------------------------------------------------


def state(request: Request, upload: Upload, rules: Rules, now: float) -> Answer:
    """The answer to HEAD: where the upload is, in the request's protocol."""
    if request.ietf is not None:
        return Answer(204, answers.ietf_state(upload, rules, now))
    return Answer(200, answers.tus_state(upload, rules))


def created(request: Request, upload: Upload, location: str, rules: Rules, now: float) -> Answer:
    """201 Created (IETF: 200 when the creation request also completed the upload)."""
    if request.ietf is None:
        return Answer(201, (("Location", location), *answers.tus_state(upload, rules)))
    status = 200 if upload.complete else 201
    return Answer(status, (("Location", location), *answers.ietf_state(upload, rules, now)))


def appended(request: Request, upload: Upload, rules: Rules, now: float) -> Answer:
    """204 after a PATCH (IETF: 200 when it completed the upload)."""
    if request.ietf is None:
        return Answer(204, answers.tus_state(upload, rules))
    return Answer(200 if upload.complete else 204, answers.ietf_state(upload, rules, now))


def deleted(request: Request) -> Answer:
    return Answer(204, () if request.ietf is not None else (("Tus-Resumable", TUS_VERSION),))
