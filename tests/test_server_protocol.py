"""The upload server's rules without a socket (as h11's are tested): a parsed request and an
upload's record in, a status, headers and a plan out, for every status the app answers."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from onward.server import answers, protocol
from onward.server.headers import Checksum, Reject
from onward.server.model import Action, Answer, Append, BodyEnd, Creation, Request, Rules
from onward.server.storage import Upload

RULES = Rules("/files/", max_size=1000, expire_after=100.0)
NOW = 5000.0
ID = "A" * 32
TUS = {"tus-resumable": "1.0.0"}
OCTETS = {**TUS, "content-type": "application/offset+octet-stream"}
IETF = {"upload-draft-interop-version": "8"}
PARTIAL = {**IETF, "content-type": "application/partial-upload"}
SHA1_OF_ABC = base64.b64encode(hashlib.sha1(b"abc").digest()).decode()


def request(method: str, target: str = "", **headers: str) -> Request:
    return Request.of(method, target, {k.replace("_", "-"): v for k, v in headers.items()})


def tus(method: str, target: str = "", **headers: str) -> Request:
    return request(method, target, **TUS, **headers)


def ietf(method: str, target: str = "", **headers: str) -> Request:
    return request(method, target, **IETF, **headers)


def upload(**fields: object) -> Upload:
    made = Upload(ID, 10, {}, created=NOW - 10, expires=NOW + 90)
    return replace(made, **fields)  # type: ignore[arg-type]


def status_of(decide: Callable[[], object]) -> int:
    """The status a decision answers with: an Answer's, a Reject's, or 0 for a plan (go on)."""
    try:
        result = decide()
    except Reject as rejected:
        return rejected.status
    return result.status if isinstance(result, Answer) else 0


# (what, decision, status); 0: the request goes on (a plan, not an answer)
CASES: list[tuple[str, Callable[[], object], int]] = [
    ("OPTIONS: capabilities", lambda: protocol.gate(request("OPTIONS"), RULES, False), 204),
    (
        "OPTIONS from an allowed origin: preflight",
        lambda: protocol.gate(request("OPTIONS", access_control_request_method="PATCH"), RULES, True),
        204,
    ),
    ("no Tus-Resumable: 412", lambda: protocol.gate(request("POST"), RULES, False), 412),
    (
        "interop version not a number",
        lambda: protocol.gate(request("POST", **{"upload-draft-interop-version": "x"}), RULES, False),
        400,
    ),
    (
        "interop version 7",
        lambda: protocol.gate(request("POST", **{"upload-draft-interop-version": "7"}), RULES, False),
        400,
    ),
    ("tus request goes on", lambda: protocol.gate(tus("POST"), RULES, False), 0),
    ("GET on the collection: 405", lambda: protocol.route(tus("GET")), 405),
    ("PUT without IETF: 405", lambda: protocol.route(tus("PUT")), 405),
    ("GET on an upload: 405", lambda: protocol.route(tus("GET", ID)), 405),
    ("a malformed id: 404", lambda: protocol.route(tus("HEAD", "../etc")), 404),
    ("unknown upload: 404", lambda: protocol.live(None, NOW), 404),
    ("expired upload: 410", lambda: protocol.live(upload(expires=NOW - 1), NOW), 410),
    ("lost data: 410", lambda: protocol.live(upload(lost=True), NOW), 410),
    ("tus HEAD: 200", lambda: protocol.state(tus("HEAD", ID), upload(), RULES, NOW), 200),
    ("IETF HEAD: 204", lambda: protocol.state(ietf("HEAD", ID), upload(), RULES, NOW), 204),
    ("tus DELETE: 204", lambda: protocol.deleted(tus("DELETE", ID)), 204),
    ("tus creation, no length: 400", lambda: protocol.tus_creation(tus("POST"), RULES), 400),
    (
        "tus creation, length and deferral: 400",
        lambda: protocol.tus_creation(tus("POST", upload_length="5", upload_defer_length="1"), RULES),
        400,
    ),
    (
        "tus creation, too large: 413",
        lambda: protocol.tus_creation(tus("POST", upload_length="1001"), RULES),
        413,
    ),
    (
        "tus creation, bad metadata: 400",
        lambda: protocol.tus_creation(tus("POST", upload_length="5", upload_metadata="a !!"), RULES),
        400,
    ),
    (
        "tus creation data of the wrong type: 415",
        lambda: protocol.tus_creation_data(tus("POST"), Creation(5, {}, 3), False),
        415,
    ),
    (
        "tus creation data past its length: 413",
        lambda: protocol.tus_creation_data(request("POST", **OCTETS), Creation(2, {}, 3), False),
        413,
    ),
    (
        "tus final of an unfinished partial: 400",
        lambda: protocol.final_length([upload(concat="partial", complete=False)], RULES),
        400,
    ),
    (
        "tus final too large: 413",
        lambda: protocol.final_length([upload(concat="partial", complete=True, offset=600)] * 2, RULES),
        413,
    ),
    ("tus creation: 201", lambda: protocol.created(tus("POST"), upload(), "/files/" + ID, RULES, NOW), 201),
    ("IETF creation without Upload-Complete: 400", lambda: protocol.ietf_creation(ietf("POST"), RULES), 400),
    (
        "IETF creation, lengths disagree: 400",
        lambda: protocol.ietf_creation(
            ietf("POST", upload_complete="?1", upload_length="4", content_length="3"), RULES
        ),
        400,
    ),
    (
        "IETF creation, too large: 413",
        lambda: protocol.ietf_creation(ietf("POST", upload_complete="?1", content_length="1001"), RULES),
        413,
    ),
    (
        "IETF creation, complete: 200",
        lambda: protocol.created(ietf("POST"), upload(complete=True), "/x", RULES, NOW),
        200,
    ),
    (
        "IETF creation, incomplete: 201",
        lambda: protocol.created(ietf("POST"), upload(), "/x", RULES, NOW),
        201,
    ),
    (
        "tus PATCH of the wrong type: 415",
        lambda: protocol.tus_patch(tus("PATCH", ID, upload_offset="0"), upload(), RULES),
        415,
    ),
    (
        "tus PATCH of a final upload: 403",
        lambda: protocol.tus_patch(
            request("PATCH", ID, **OCTETS, upload_offset="0"), upload(concat="final"), RULES
        ),
        403,
    ),
    (
        "tus PATCH without an offset: 400",
        lambda: protocol.tus_patch(request("PATCH", ID, **OCTETS), upload(), RULES),
        400,
    ),
    (
        "tus PATCH at the wrong offset: 409",
        lambda: protocol.tus_patch(
            request("PATCH", ID, **OCTETS, upload_offset="3"), upload(offset=2), RULES
        ),
        409,
    ),
    (
        "tus PATCH changing the length: 400",
        lambda: protocol.tus_patch(
            request("PATCH", ID, **OCTETS, upload_offset="0", upload_length="9"), upload(), RULES
        ),
        400,
    ),
    (
        "tus PATCH past the length: 413",
        lambda: protocol.tus_patch(
            request("PATCH", ID, **OCTETS, upload_offset="0", content_length="11"), upload(), RULES
        ),
        413,
    ),
    (
        "tus PATCH with an unknown checksum: 400",
        lambda: protocol.tus_patch(
            request("PATCH", ID, **OCTETS, upload_offset="0", upload_checksum="crc32 AAAA"), upload(), RULES
        ),
        400,
    ),
    (
        "tus PATCH goes on",
        lambda: protocol.tus_patch(request("PATCH", ID, **OCTETS, upload_offset="0"), upload(), RULES),
        0,
    ),
    ("tus PATCH done: 204", lambda: protocol.appended(tus("PATCH", ID), upload(), RULES, NOW), 204),
    (
        "IETF PATCH of the wrong type: 415",
        lambda: protocol.ietf_patch(ietf("PATCH", ID), upload(), RULES, NOW),
        415,
    ),
    (
        "IETF PATCH without Upload-Complete: 400",
        lambda: protocol.ietf_patch(request("PATCH", ID, **PARTIAL, upload_offset="0"), upload(), RULES, NOW),
        400,
    ),
    (
        "IETF PATCH at the wrong offset: 409",
        lambda: protocol.ietf_patch(
            request("PATCH", ID, **PARTIAL, upload_offset="1", upload_complete="?0"), upload(), RULES, NOW
        ),
        409,
    ),
    (
        "IETF 'it is complete' of a complete upload: 200",
        lambda: protocol.ietf_patch(
            request("PATCH", ID, **PARTIAL, upload_offset="10", upload_complete="?1"),
            upload(offset=10, complete=True),
            RULES,
            NOW,
        ),
        200,
    ),
    (
        "IETF PATCH of a complete upload with data: 400",
        lambda: protocol.ietf_patch(
            request("PATCH", ID, **PARTIAL, upload_offset="10", upload_complete="?1", content_length="1"),
            upload(offset=10, complete=True),
            RULES,
            NOW,
        ),
        400,
    ),
    (
        "IETF PATCH, complete short of the length: 400",
        lambda: protocol.ietf_patch(
            request("PATCH", ID, **PARTIAL, upload_offset="0", upload_complete="?1", content_length="3"),
            upload(),
            RULES,
            NOW,
        ),
        400,
    ),
    (
        "IETF PATCH past the size cap: 413",
        lambda: protocol.ietf_patch(
            request("PATCH", ID, **PARTIAL, upload_offset="0", upload_complete="?0", content_length="1001"),
            upload(length=None),
            RULES,
            NOW,
        ),
        413,
    ),
    ("IETF PATCH done: 204", lambda: protocol.appended(ietf("PATCH", ID), upload(), RULES, NOW), 204),
    (
        "IETF PATCH completing: 200",
        lambda: protocol.appended(ietf("PATCH", ID), upload(complete=True), RULES, NOW),
        200,
    ),
    ("body whole: goes on", lambda: protocol.after_body(BodyEnd.DONE, tus("PATCH", ID), None, 60), 0),
    (
        "tus checksum mismatch: 460",
        lambda: protocol.after_body(BodyEnd.BAD_CHECKSUM, tus("PATCH", ID), Checksum("sha1", b"", 460), 60),
        460,
    ),
    (
        "Content-Digest mismatch: 400",
        lambda: protocol.after_body(
            BodyEnd.BAD_CHECKSUM, ietf("PATCH", ID), Checksum("sha256", b"", 400), 60
        ),
        400,
    ),
    (
        "tus body past the length: 413",
        lambda: protocol.after_body(BodyEnd.TOO_LONG, tus("PATCH", ID), None, 60),
        413,
    ),
    (
        "IETF body past the length: 400",
        lambda: protocol.after_body(BodyEnd.TOO_LONG, ietf("PATCH", ID), None, 60),
        400,
    ),
    (
        "ended by a newer request: 409",
        lambda: protocol.after_body(BodyEnd.ENDED, tus("PATCH", ID), None, 60),
        409,
    ),
    ("no data in time: 408", lambda: protocol.after_body(BodyEnd.TIMEOUT, tus("PATCH", ID), None, 60), 408),
    (
        "the client hung up: 400",
        lambda: protocol.after_body(BodyEnd.DISCONNECT, tus("PATCH", ID), None, 60),
        400,
    ),
    ("IETF completion short of the length: 400", lambda: protocol.ietf_completion(upload(offset=3)), 400),
]


@pytest.mark.parametrize(("decide", "status"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_each_decision_answers_its_status(decide: Callable[[], object], status: int) -> None:
    assert status_of(decide) == status


def test_routes() -> None:
    assert protocol.route(tus("POST")) is Action.CREATE_TUS
    assert (
        protocol.route(ietf("POST")) is Action.CREATE_IETF
        and protocol.route(ietf("PUT")) is Action.CREATE_IETF
    )
    assert (
        protocol.route(tus("HEAD", ID)) is Action.HEAD and protocol.route(tus("DELETE", ID)) is Action.DELETE
    )
    overridden = request("POST", ID, **TUS, x_http_method_override="patch")
    assert protocol.route(overridden) is Action.PATCH


def test_plans_carry_what_the_app_needs() -> None:
    patch = protocol.tus_patch(
        request(
            "PATCH", ID, **OCTETS, upload_offset="0", upload_length="7", upload_checksum=f"sha1 {SHA1_OF_ABC}"
        ),
        upload(length=None),
        RULES,
    )
    assert isinstance(patch, Append)
    assert patch.limit == 7 and patch.new_length == 7 and patch.checksum is not None
    assert patch.checksum.mismatch_status == 460
    unknown = protocol.ietf_patch(
        request("PATCH", ID, **PARTIAL, upload_offset="2", upload_complete="?1", content_length="3"),
        upload(length=None, offset=2),
        RULES,
        NOW,
    )
    assert unknown == Append(5, None, 5, True)  # a complete PATCH ends where its body does
    made = protocol.ietf_creation(
        ietf("POST", upload_complete="?1", content_length="4", content_type="text/x"), RULES
    )
    assert (made.length, made.body, made.complete, made.content_type) == (4, 4, True, "text/x")
    chunked = protocol.tus_creation(tus("POST", upload_defer_length="1", transfer_encoding="chunked"), RULES)
    assert chunked.body is None and chunked.length is None
    assert protocol.tus_creation_data(tus("POST"), chunked, has_data=False).body == 0
    final = protocol.tus_creation(tus("POST", upload_concat=f"final;/files/{ID} /files/{ID}"), RULES)
    assert final.concat == "final" and final.parts == (ID, ID)


def test_limits_and_completion() -> None:
    assert protocol.data_limit(upload(length=None), None, RULES) == RULES.max_size
    assert protocol.data_limit(upload(length=None), 8, RULES) == 8
    assert protocol.ietf_completion(upload(length=None, offset=4)) is True  # record the length
    assert protocol.ietf_completion(upload(offset=10)) is False
    assert protocol.needs_recovery(upload(offset=10)) and not protocol.needs_recovery(upload(offset=9))
    assert not protocol.needs_recovery(upload(offset=10, concat="partial", complete=True))
    assert protocol.needs_recovery(upload(offset=9, promoted=True))


def test_headers_describe_the_upload() -> None:
    tus_head = dict(
        protocol.state(tus("HEAD", ID), upload(offset=4, metadata={"a": "YQ=="}), RULES, NOW).headers
    )
    assert tus_head["Upload-Offset"] == "4" and tus_head["Upload-Length"] == "10"
    assert tus_head["Upload-Metadata"] == "a YQ==" and tus_head["Cache-Control"] == "no-store"
    deferred = dict(protocol.state(tus("HEAD", ID), upload(length=None), RULES, NOW).headers)
    assert deferred["Upload-Defer-Length"] == "1" and "Upload-Length" not in deferred
    ietf_head = dict(protocol.state(ietf("HEAD", ID), upload(offset=4), RULES, NOW).headers)
    assert ietf_head["Upload-Complete"] == "?0" and ietf_head["Upload-Limit"] == "max-size=1000, max-age=90"
    made = dict(protocol.created(tus("POST"), upload(), "/root/files/" + ID, RULES, NOW).headers)
    assert made["Location"] == "/root/files/" + ID
    final = dict(answers.tus_state(upload(concat="final", parts=[ID]), RULES))
    assert final["Upload-Concat"] == f"final;/files/{ID}"
    interim = dict(protocol.interim_headers(ietf("POST"), "/files/" + ID, upload(), RULES, NOW))
    assert interim["Upload-Draft-Interop-Version"] == "8" and interim["Location"] == "/files/" + ID


def test_refusals_speak_the_clients_protocol() -> None:
    mismatch = Reject(
        409, "no", "mismatching-upload-offset", (("expected-offset", 3),), (("Upload-Offset", "3"),)
    )
    problem = answers.refusal(mismatch, True, RULES)
    body = json.loads(problem.body)
    assert problem.status == 409 and dict(problem.headers)["Upload-Offset"] == "3"
    assert body["type"].endswith("#mismatching-upload-offset") and body["expected-offset"] == 3
    assert dict(answers.refusal(Reject(413, "big"), True, RULES).headers)["Upload-Limit"].startswith(
        "max-size=1000"
    )
    text = answers.refusal(Reject(401, "who"), False, RULES)
    assert text.body == b"who\n" and dict(text.headers)["WWW-Authenticate"].startswith("Bearer")
    assert dict(answers.refusal(Reject(405, "no"), False, RULES).headers)["Allow"].startswith("POST")
    capable = dict(answers.capabilities(RULES))
    assert capable["Tus-Max-Size"] == "1000" and "checksum" in capable["Tus-Extension"]


def test_cors() -> None:
    assert answers.cors_headers("https://a", ()) == ()
    assert answers.cors_headers("https://a", ("https://b",)) == ()
    allowed = dict(answers.cors_headers("https://a", ("*",)))
    assert allowed["Access-Control-Allow-Origin"] == "https://a" and allowed["Vary"] == "Origin"
    preflight = protocol.gate(request("OPTIONS", access_control_request_method="PATCH"), RULES, True)
    assert preflight is not None and "Access-Control-Allow-Methods" in dict(preflight.headers)


def test_a_bad_content_length_is_400() -> None:
    with pytest.raises(Reject) as refused:
        protocol.tus_creation(tus("POST", upload_length="5", content_length="lots"), RULES)
    assert refused.value.status == 400
