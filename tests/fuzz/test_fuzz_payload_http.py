"""Short fuzz runs (``make test``) of the payload and HTTP targets, plus the regressions they
found; the long run is ``benchmarks/fuzz.py``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from gonka_ray.exceptions import MalformedMessage
from gonka_ray.sdk import sign_chat
from tests.fuzz.targets import (
    CHAIN,
    HTTP,
    HTTP_CLIENT,
    NAN_LOGPROB,
    OUT_OF_VOCAB,
    PAYLOAD,
    Target,
    payload_world,
    run_http,
    run_payload,
)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_all(target: Target, case) -> None:
    for check in target.inputs(case):
        check()


@settings(FUZZ, max_examples=25)  # 4 payloads each, graded by a verifier on the fake engine
@given(PAYLOAD.cases)
def test_fuzz_payload_responses_grade_to_a_result(case) -> None:
    check_all(PAYLOAD, case)


@settings(FUZZ, max_examples=30)  # 4 requests each; the first call also imports Serve (seconds)
@given(HTTP.cases)
def test_fuzz_http_bodies_and_headers_get_200_or_4xx(case) -> None:
    check_all(HTTP, case)


# --- regressions found by the fuzzer -------------------------------------------------------------


def test_honest_payload_passes_and_out_of_vocabulary_output_fails_the_check() -> None:
    # Was: the verifier's engine raised InvalidRequest on token ids outside the vocabulary, the
    # check raised, and the inference was never validated (an executor's free pass).
    world = payload_world()
    honest = world.grade(world.record, world.body)
    assert not honest.structural_error
    for seed in range(3):
        assert run_payload(("forged", seed, OUT_OF_VOCAB)) == "failed:structural"


def test_nan_logprob_fails_the_check() -> None:
    # Was: a NaN logprob made the mean deviation NaN, ``NaN > bound`` is False, and it passed.
    for seed in range(3):
        run_payload(("forged", seed, NAN_LOGPROB))  # raises if the verdict passed


def _headers(**extra: str) -> tuple:
    return ("valid", "", "none", "none", 0, [(k.encode(), v.encode()) for k, v in extra.items()])


def test_deeply_nested_json_body_is_a_400() -> None:
    # Was: json.loads raised RecursionError, answered as a 500.
    assert run_http(("chat", ("nested", 100_000), _headers())) == "4xx:400"


def test_unknown_field_with_any_name_still_answers() -> None:
    # Was: an unknown field named with a non-latin-1 character (or a newline) went verbatim
    # into the X-Gonka-Ignored-Fields header and the response could not be built (500).
    for name in ("emoji-\U0001f600", "new\nline", "del\x7f"):
        body = ("field", "model", "fake", {name: 1})
        assert run_http(("chat", body, _headers())) == "200"


def test_lone_surrogate_in_content_is_a_typed_error() -> None:
    # Was: msgpack raised UnicodeEncodeError while signing the request (500 at the ingress).
    body = ("field", "messages", [{"role": "user", "content": "a\ud800"}], {})
    assert run_http(("chat", body, _headers())) == "4xx:400"
    with pytest.raises(MalformedMessage):
        sign_chat(
            HTTP_CLIENT, model="fake", messages=[{"role": "user", "content": "\udfff"}], chain=CHAIN
        )


def test_out_of_range_logprob_counts_next_to_a_signed_request_are_400() -> None:
    # Was (found in review): a negative top_logprobs/logprobs in the body of a signed request was
    # accepted and sliced the logprob tables from the end.
    chat = ("field", "top_logprobs", -3, {"logprobs": True})
    assert run_http(("chat", chat, ("none", "", "none", "valid", 1, []))) == "4xx:400"
    completion = ("field", "logprobs", 99, {})
    assert run_http(("completion", completion, ("none", "", "none", "valid", 1, []))) == "4xx:400"
    ok = ("field", "top_logprobs", 2, {"logprobs": True})
    assert run_http(("chat", ok, ("none", "", "none", "valid", 1, []))) == "200"
