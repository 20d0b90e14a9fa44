"""The Gemini rewriting backend against a local fake of the Gemini REST endpoint.

No test touches the network: :mod:`fake_gemini` runs a real HTTP server on
127.0.0.1 and the real ``google-genai`` SDK talks to it, so request building,
error classes and timeouts are the SDK's own.  Backoff sleeps are injected
(recorded, not slept) and timeouts are a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from pathlib import Path

import pytest

from core_model.text.rewrite import RewriteBackend, RewriteError, get_backend
from core_model.text.rewrite.cache import DiskCache, cache_key
from core_model.text.rewrite.gemini import (
    DEFAULT_MODEL,
    PROMPT_VERSION,
    GeminiBackend,
    RetryPolicy,
)

try:  # tests/ on sys.path (pytest's default rootdir mode) or tests as a package
    from fake_gemini import FakeGemini, Reply
except ImportError:  # pragma: no cover
    from tests.fake_gemini import FakeGemini, Reply

KEY = "AIzaFAKE-test-key-0123456789abcdefXYZ"

REPORT = (
    "EXAMINATION: Chest PA and lateral.\n"
    "INDICATION: 92-year-old woman with cough, r/o pneumonia.\n"
    "COMPARISON: 01/02/2019.\n"
    "FINDINGS: Compared with the prior study of Jan 2, 2019, the small right pleural effusion "
    "is unchanged. No pneumothorax. Heart size is normal. Endotracheal tube tip is 4.5 cm "
    "above the carina.\n"
    "IMPRESSION: Stable small right pleural effusion. Findings discussed with Dr. John Smith "
    "at 10:30 am on 01/03/2019."
)
GOOD = (
    "Small right pleural effusion.",
    "No pneumothorax.",
    "Heart size is normal.",
    "Endotracheal tube tip is 4.5 cm above the carina.",
)
SENTENCES = list(GOOD)


@pytest.fixture
def server(fake_gemini: FakeGemini) -> FakeGemini:
    return fake_gemini


class Recorder:
    """Stands in for time.sleep: remembers the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Recorder:
    return Recorder()


@pytest.fixture
def make(server: FakeGemini, sleeps: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Build a backend pointed at the fake server, with a private cache and no real sleeping."""
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)

    def build(**options: object) -> GeminiBackend:
        defaults: dict[str, object] = {
            "api_key": KEY,
            "base_url": server.url,
            "timeout": 2.0,
            "cache_dir": tmp_path / "cache",
            "sleep": sleeps,
            "rng": random.Random(0),
        }
        defaults.update(options)
        return GeminiBackend(**defaults)  # type: ignore[arg-type]

    return build


# ------------------------------------------------------------------ success path


def test_single_entity_success_sends_only_deidentified_clinical_text(server, make):
    server.script(FakeGemini.sentences(*GOOD))
    backend = make()

    assert backend.single_entity(REPORT) == list(GOOD)

    assert len(server.requests) == 1
    request = server.requests[0]
    assert request.method == "POST"
    assert request.path == f"/v1beta/models/{DEFAULT_MODEL}:generateContent"
    # The key travels in the header, and nowhere else.
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY not in request.path
    assert KEY.encode() not in request.raw
    # The JSON contract: temperature 0, JSON answers.
    config = request.json["generationConfig"]
    assert config["temperature"] == 0
    assert config["responseMimeType"] == "application/json"
    # What left the machine: de-identified FINDINGS/IMPRESSION, nothing else.
    prompt = request.prompt_text()
    assert "small right pleural effusion is unchanged" in prompt
    assert "Dr. ___" in prompt
    for secret in ("John", "Smith", "01/02/2019", "01/03/2019", "Jan 2, 2019", "10:30", "92"):
        assert secret not in request.raw.decode(), secret
    assert "cough" not in prompt  # the INDICATION section is not sent at all
    assert "{report}" not in prompt


def test_temporal_wording_left_by_the_model_is_removed(server, make):
    server.script(FakeGemini.sentences("Stable small right pleural effusion.", *GOOD[1:]))
    assert make().single_entity(REPORT) == list(GOOD)


def test_get_backend_builds_the_gemini_backend(make, server):
    backend = get_backend("gemini", api_key=KEY, base_url=server.url, cache=False)
    assert isinstance(backend, GeminiBackend)
    assert isinstance(backend, RewriteBackend)
    assert backend.name == "gemini"
    assert backend.cache is None


def test_empty_report_sends_nothing(server, make):
    assert make().single_entity("   ") == []
    assert server.requests == []


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            FakeGemini.error(429, "Resource has been exhausted (e.g. check quota)."), id="429"
        ),
        pytest.param(FakeGemini.error(500, "An internal error has occurred."), id="500"),
        pytest.param(FakeGemini.error(503, "The model is overloaded."), id="503"),
        pytest.param(FakeGemini.raw(502, "<html><body>Bad Gateway</body></html>"), id="502-html"),
        pytest.param(FakeGemini.raw(200, "<html>captive portal</html>"), id="200-not-json"),
        pytest.param(FakeGemini.malformed(), id="malformed-json"),
        pytest.param(FakeGemini.answer({"text": "no sentences key"}), id="wrong-shape"),
        pytest.param(FakeGemini.answer({"sentences": "one string"}), id="wrong-type"),
        pytest.param(FakeGemini.text("", finish_reason="SAFETY"), id="empty-answer"),
        pytest.param(FakeGemini.adds_finding(*GOOD), id="adds-a-finding"),
        pytest.param(FakeGemini.sentences(*GOOD[1:]), id="drops-a-finding"),
        pytest.param(
            FakeGemini.sentences("Small right pleural effusion.", "Pneumothorax.", *GOOD[2:]),
            id="flips-a-negation",
        ),
    ],
)
def test_a_failed_attempt_is_retried(server, make, sleeps, failure: Reply):
    server.script(failure, FakeGemini.sentences(*GOOD))

    assert make().single_entity(REPORT) == list(GOOD)

    assert len(server.requests) == 2
    assert len(sleeps.delays) == 1
    assert 1.0 <= sleeps.delays[0] <= 1.5  # base 1 s, jitter up to +50 %


def test_timeout_then_success(server, make, sleeps):
    server.script(FakeGemini.sentences(*GOOD).slow(3.0), FakeGemini.sentences(*GOOD))
    backend = make(timeout=0.3)

    started = time.monotonic()
    assert backend.single_entity(REPORT) == list(GOOD)

    assert time.monotonic() - started < 2.5  # gave up on the slow reply, did not wait 3 s
    assert len(server.requests) == 2
    assert len(sleeps.delays) == 1


def test_exhausted_retries_raise_with_the_last_reason(server, make, sleeps, tmp_path):
    server.script(*[FakeGemini.error(503, "The model is overloaded.")] * 3)
    backend = make(max_attempts=3)

    with pytest.raises(RewriteError) as info:
        backend.single_entity(REPORT)

    message = str(info.value)
    assert "after 3 attempts" in message
    assert "503" in message and "The model is overloaded." in message
    assert "\n" not in message
    assert len(server.requests) == 3
    # Exponential: ~1 s then ~2 s (each with up to 50 % jitter).
    assert len(sleeps.delays) == 2
    assert 1.0 <= sleeps.delays[0] <= 1.5 and 2.0 <= sleeps.delays[1] <= 3.0
    # Nothing invalid is cached.
    assert not list((tmp_path / "cache").glob("*/*.json"))


def test_exhausted_retries_on_invalid_answers_say_why(server, make):
    server.script(*[FakeGemini.adds_finding(*GOOD)] * 2)

    with pytest.raises(RewriteError, match=r"Pneumothorax: absent -> present"):
        make(max_attempts=2).single_entity(REPORT)


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        (400, "API key not valid. Please pass a valid API key.", "check the request"),
        (401, "Request had invalid authentication credentials.", "check the API key"),
        (403, "Method doesn't allow unregistered callers.", "check the API key"),
        (404, "models/gemini-nope is not found for API version v1beta.", "model name"),
    ],
)
def test_client_errors_are_not_retried(server, make, sleeps, status, message, hint):
    server.script(FakeGemini.error(status, message), FakeGemini.sentences(*GOOD))

    with pytest.raises(RewriteError) as info:
        make().single_entity(REPORT)

    text = str(info.value)
    assert f"HTTP {status}" in text
    assert message in text
    assert hint in text
    assert "\n" not in text
    assert KEY not in text
    assert info.value.__cause__ is None  # the SDK error (with the request headers) is not chained
    assert len(server.requests) == 1
    assert sleeps.delays == []


def test_a_rejected_key_stops_further_requests(server, make):
    server.script(FakeGemini.error(403, "The caller does not have permission."))
    backend = make()
    with pytest.raises(RewriteError, match="HTTP 403"):
        backend.single_entity(REPORT)
    with pytest.raises(RewriteError, match="HTTP 403"):
        backend.remove_entity(SENTENCES, "Pneumothorax")
    assert len(server.requests) == 1


def test_sdk_does_not_retry_by_itself(server, make):
    server.script(FakeGemini.error(503, "overloaded"), FakeGemini.sentences(*GOOD))

    with pytest.raises(RewriteError, match="after 1 attempt;"):
        make(max_attempts=1).single_entity(REPORT)

    assert len(server.requests) == 1  # the SDK's own tenacity retry is off


def test_server_retry_hint_is_honoured_but_capped(server, make, sleeps):
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
        }
    }
    server.script(
        Reply(429, json.dumps(body).encode()),
        Reply(429, json.dumps(body).encode()),
        FakeGemini.sentences(*GOOD),
    )

    make(backoff_max=5.0).single_entity(REPORT)

    assert sleeps.delays == [5.0, 5.0]


def test_connection_refused_is_retried_then_reported(make, sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make(base_url=f"http://127.0.0.1:{port}", max_attempts=2)

    with pytest.raises(RewriteError, match="connection failed"):
        backend.single_entity(REPORT)

    assert len(sleeps.delays) == 1


def test_retry_policy_grows_exponentially_and_stays_capped():
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=10.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.delay(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# ------------------------------------------------------------------ cache


def test_rerun_is_served_from_the_cache_with_zero_requests(server, make):
    server.script(FakeGemini.sentences(*GOOD), FakeGemini.keep(0, 2, 3))
    first = make()
    assert first.single_entity(REPORT) == list(GOOD)
    assert first.remove_entity(SENTENCES, "Pneumothorax") == [GOOD[0], GOOD[2], GOOD[3]]
    assert len(server.requests) == 2

    server.reset()
    second = make()  # a new process would build a new backend over the same directory
    assert second.single_entity(REPORT) == list(GOOD)
    assert second.remove_entity(SENTENCES, "Pneumothorax") == [GOOD[0], GOOD[2], GOOD[3]]

    assert server.requests == []


def test_cache_files_hold_no_key_and_no_identifiers(server, make, tmp_path):
    server.script(FakeGemini.sentences(*GOOD))
    make().single_entity(REPORT)

    files = list((tmp_path / "cache").glob("*/*.json"))
    assert len(files) == 1
    content = files[0].read_text()
    assert KEY not in content
    assert "Smith" not in content and "01/02/2019" not in content
    assert json.loads(content)["value"] == list(GOOD)


def test_corrupt_cache_entry_is_ignored_and_rewritten(server, make, tmp_path):
    server.script(FakeGemini.sentences(*GOOD))
    make().single_entity(REPORT)
    [path] = (tmp_path / "cache").glob("*/*.json")
    path.write_text('{"format": 1, "key": "trunc')

    server.reset()
    server.script(FakeGemini.sentences(*GOOD))
    assert make().single_entity(REPORT) == list(GOOD)

    assert len(server.requests) == 1
    assert json.loads(path.read_text())["value"] == list(GOOD)
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_cache_disabled_asks_every_time(server, make):
    server.script(FakeGemini.sentences(*GOOD), FakeGemini.sentences(*GOOD))
    backend = make(cache=False)
    backend.single_entity(REPORT)
    backend.single_entity(REPORT)
    assert len(server.requests) == 2


def test_disk_cache_roundtrip_and_keys(tmp_path):
    cache = DiskCache(tmp_path)
    parts = {"model": "m", "prompt_version": "v", "operation": "op", "text": "t"}
    key = cache_key(**parts)
    assert cache.get(key) is None
    cache.set(key, {"a": [1, 2]}, model="m")
    assert cache.get(key) == {"a": [1, 2]}
    # Every part of the key matters.
    others = [cache_key(**{**parts, name: parts[name] + "x"}) for name in parts] + [
        cache_key(**parts, entity="Edema")
    ]
    assert key not in others and len(set(others)) == len(others)
    assert repr(cache) == f"DiskCache({str(tmp_path)!r})"
    assert cache.clear() == 1 and cache.get(key) is None


def test_default_cache_dir_is_under_the_user_cache():
    import platformdirs

    cache = DiskCache()
    assert cache.directory == Path(platformdirs.user_cache_dir("concord")) / "gemini"


def test_prompt_version_is_part_of_the_key():
    a = cache_key(model=DEFAULT_MODEL, prompt_version=PROMPT_VERSION, operation="x", text="t")
    b = cache_key(model=DEFAULT_MODEL, prompt_version=PROMPT_VERSION + "'", operation="x", text="t")
    assert a != b


# ------------------------------------------------------------------ remove_entity


def test_remove_entity_returns_the_callers_sentences(server, make):
    sentences = [*SENTENCES[:3], "Findings discussed with Dr. John Smith at 10:30 am."]
    server.script(FakeGemini.keep(0, 2, 3))

    kept = make().remove_entity(sentences, "Pneumothorax")

    assert kept == [sentences[0], sentences[2], sentences[3]]  # the originals, unchanged
    prompt = server.requests[0].prompt_text()
    assert "1: No pneumothorax." in prompt
    assert "Observation: Pneumothorax" in prompt
    assert "3: Findings discussed with Dr. ___ at ___." in prompt
    assert "Smith" not in prompt


def test_remove_entity_rejects_answers_that_change_other_labels(server, make, sleeps):
    server.script(
        FakeGemini.keep(0, 3),  # also drops "Heart size is normal." (Cardiomegaly)
        FakeGemini.keep(0, 1, 2, 3),  # keeps the pneumothorax sentence
        FakeGemini.keep(0, 9),  # index out of range
        FakeGemini.keep(0, 2, 3),
    )

    assert make(max_attempts=4).remove_entity(SENTENCES, "Pneumothorax") == [
        GOOD[0],
        GOOD[2],
        GOOD[3],
    ]
    assert len(server.requests) == 4
    assert len(sleeps.delays) == 3


def test_remove_entity_skips_the_request_when_the_entity_is_absent(server, make):
    assert make().remove_entity(SENTENCES, "Fracture") == SENTENCES
    assert server.requests == []


def test_remove_entity_checks_the_entity_name(make):
    with pytest.raises(ValueError, match="not a CheXpert finding"):
        make().remove_entity(SENTENCES, "No Finding")


# ------------------------------------------------------------------ the API key


def test_missing_key_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(RewriteError, match="GEMINI_API_KEY"):
        GeminiBackend(cache_dir=tmp_path)
    with pytest.raises(RewriteError, match="empty"):
        GeminiBackend(api_key="  ", cache_dir=tmp_path)


def test_key_comes_from_the_environment_gemini_first(server, make, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-should-lose")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-wins")
    server.script(FakeGemini.sentences(*GOOD), FakeGemini.sentences(*GOOD))

    make(api_key=None, cache=False).single_entity(REPORT)
    monkeypatch.delenv("GEMINI_API_KEY")
    make(api_key=None, cache=False).single_entity(REPORT)

    assert [r.headers["x-goog-api-key"] for r in server.requests] == [
        "gemini-key-wins",
        "google-key-should-lose",
    ]


def test_key_never_appears_in_repr_logs_or_errors(server, make, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    server.script(
        FakeGemini.error(429, "slow down"),
        FakeGemini.sentences(*GOOD).slow(3.0),
        FakeGemini.malformed(),
        FakeGemini.sentences(*GOOD),
        # A server that echoes the key back in its error message:
        FakeGemini.error(400, f"API key not valid: {KEY}", "INVALID_ARGUMENT"),
    )
    backend = make(timeout=0.3)

    assert KEY not in repr(backend) and KEY not in str(backend)
    assert backend.single_entity(REPORT) == list(GOOD)
    with pytest.raises(RewriteError) as info:
        backend.remove_entity(SENTENCES, "Pneumothorax")

    assert KEY not in str(info.value) and "[redacted]" in str(info.value)
    assert KEY not in repr(info.value)
    assert len(server.requests) == 5
    assert caplog.records, "expected retry logs"
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.name
    assert KEY not in caplog.text
    assert "retrying" in caplog.text
