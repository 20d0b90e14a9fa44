"""The opt-in Gemini rewriting backend.

The rule backend rewrites reports offline; this backend asks Google's Gemini
model instead, which copes better with unusual phrasing.  Because it sends
report text off the machine it is never the default: a caller must ask for it
(``get_backend("gemini")``) and provide an API key.  Before anything is sent:

* only the clinical sections (FINDINGS, IMPRESSION) of a report are used, and
  they are de-identified (:mod:`core_model.text.rewrite.deid`);
* for ``remove_entity`` each sentence is de-identified and the answer is a list
  of indices, so the sentences returned are always the caller's own.

Every answer is checked with the labeler before it is used: an answer that
does not parse, has the wrong shape, or changes what the report says about any
CheXpert finding is rejected and counts as a failed attempt, exactly like an
HTTP 503.  Attempts are retried with exponential backoff and jitter; client
errors other than 408/429 (a bad key, an unknown model) fail at once.  The
SDK's own retry is switched off so that this policy is the only one.  Validated
answers are kept in a disk cache (:mod:`core_model.text.rewrite.cache`), so a
rerun over the same corpus makes no request.

The API key never appears in a log record, ``repr()``, an exception message, or
the cache; error texts from the server are scrubbed of it as well.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core_model.text.labeler import default_labeler, label_report
from core_model.text.observations import FINDINGS, Assertion
from core_model.text.rewrite.base import RewriteError
from core_model.text.rewrite.cache import DiskCache, cache_key
from core_model.text.rewrite.deid import deidentify
from core_model.text.sections import clinical_sections
from core_model.text.temporal import remove_temporal

log = logging.getLogger(__name__)

#: The model asked when none is given (a fast, inexpensive Gemini model).
DEFAULT_MODEL = "gemini-2.5-flash"
#: REST API version.  Pinned (google-genai 3.x defaults to "v1", older releases to
#: "v1beta"), so the request path does not change with the SDK version.
DEFAULT_API_VERSION = "v1beta"
#: Environment variables searched for the API key, in order.
API_KEY_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

#: Changes whenever a prompt below changes; it is part of every cache key, so
#: answers to an older prompt are never reused.
PROMPT_VERSION = "concord-rewrite-1"

SINGLE_ENTITY_PROMPT = """\
You rewrite chest radiograph reports for a research data set.

Rewrite the report below as a list of short, complete sentences.
Rules:
1. Each sentence describes exactly one clinical entity (one finding, one device,
   or one normal structure) and keeps what the report says about it: present,
   absent ("no pneumothorax"), or uncertain ("possible", "may represent",
   "cannot be excluded").
2. Keep size, severity, location and laterality ("small", "right lower lobe",
   "4.5 cm above the carina").
3. Remove every temporal or comparison statement: words such as "new",
   "unchanged", "stable", "improved", "worsened", "increased", "decreased",
   "resolved", "again seen", "as before", "compared with the prior study".
   Describe only what is seen now; drop a sentence that is only a comparison.
4. Drop text that is not a clinical observation: indications, technique,
   notifications, recommendations, names, dates.
5. Do not add any finding, diagnosis or negation that the report does not state,
   and do not drop any finding that it does state.
6. "___" marks removed personal information; never try to fill it in.

Answer with JSON only, in exactly this form: {"sentences": ["...", "..."]}

Report:
<<<
{report}
>>>
"""

REMOVE_ENTITY_PROMPT = """\
Below are numbered sentences from a chest radiograph report, and one CheXpert
observation.

Return the numbers of the sentences that do NOT mention the observation.
A sentence mentions it when it states it as present, absent ("no ..."), or
uncertain ("possible ..."), under any name or synonym ({hint}).
Keep every sentence that does not mention it, including normal statements
about other structures.

Answer with JSON only, in exactly this form: {"keep": [0, 2, 3]}
(0-based sentence numbers, in increasing order).

Observation: {entity}

Sentences:
{sentences}
"""

#: Synonyms shown to the model for each observation (CheXpert's definitions).
ENTITY_HINTS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "widened or enlarged mediastinum, cardiomediastinal silhouette",
    "Cardiomegaly": "enlarged heart, enlarged cardiac silhouette, heart size",
    "Lung Opacity": "opacity, opacification, infiltrate, airspace disease, haziness",
    "Lung Lesion": "nodule, mass, lesion, tumor, cavitary lesion",
    "Edema": "pulmonary edema, vascular congestion, interstitial edema, fluid overload",
    "Consolidation": "consolidation, airspace consolidation",
    "Pneumonia": "pneumonia, infection, infectious process",
    "Atelectasis": "atelectasis, collapse, volume loss",
    "Pneumothorax": "pneumothorax, pneumothoraces",
    "Pleural Effusion": "pleural effusion, pleural fluid, blunted costophrenic angle",
    "Pleural Other": "pleural thickening, fibrothorax, pleural plaque, pleural scarring",
    "Fracture": "fracture, rib fracture, broken bone",
    "Support Devices": "lines, tubes, catheters, pacemaker, wires, clips, stents, valves, devices",
}

_SINGLE_ENTITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentences": {"type": "array", "items": {"type": "string"}}},
    "required": ["sentences"],
}
_REMOVE_ENTITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"keep": {"type": "array", "items": {"type": "integer"}}},
    "required": ["keep"],
}

#: HTTP statuses worth another attempt: timeouts, rate limits, server errors.
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))

#: Statuses that will fail every later request too (bad key, no access, unknown model).
FATAL_STATUS = frozenset({401, 403, 404})

_HINTS_BY_STATUS = {
    400: "check the request and the API key",
    401: "check the API key (GEMINI_API_KEY)",
    403: "check the API key (GEMINI_API_KEY) and that the Gemini API is enabled for it",
    404: "check the model name",
}


class InvalidAnswer(ValueError):
    """A Gemini answer that does not parse, has the wrong shape, or changes the labels."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``min(max_delay, base * 2**(n-1)) * (1 + U(0, jitter))``."""

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0:
            raise ValueError("delays and jitter must not be negative")

    def delay(self, failed_attempts: int, rng: random.Random, at_least: float = 0.0) -> float:
        """Seconds to wait after ``failed_attempts`` failures (``at_least``: the server's hint)."""
        base = min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))
        wait = base * (1.0 + rng.uniform(0.0, self.jitter))
        return min(self.max_delay, max(wait, at_least))


class _Secret:
    """A string that does not show itself in repr() or str() (debuggers, pytest's locals)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def _resolve_api_key(api_key: str | None) -> str:
    """The explicit key, else ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``; never empty."""
    candidates = [api_key] if api_key is not None else [os.environ.get(v) for v in API_KEY_ENV]
    for value in candidates:
        if value and value.strip():
            return value.strip()
    if api_key is not None:
        raise RewriteError("the Gemini API key passed as api_key is empty")
    raise RewriteError(
        "the Gemini backend needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) "
        "or pass api_key=...; see docs/gemini.md"
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exceptions of whichever HTTP library the SDK uses (httpx or httpx2)."""
    found: list[type[BaseException]] = []
    for module in ("httpx", "httpx2"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        found.append(mod.TransportError)
    return tuple(found)


class GeminiBackend:
    """Rewrites reports with Gemini (opt-in; sends de-identified clinical text to Google).

    Options (all keyword-only, so ``get_backend("gemini", **options)`` reads well):

    ``api_key``
        Explicit key; by default ``GEMINI_API_KEY``, then ``GOOGLE_API_KEY``.
    ``model``, ``base_url``, ``api_version``
        Which model and endpoint (``base_url`` None: the SDK's default, Google).
    ``timeout``
        Seconds per HTTP request.
    ``max_attempts``, ``backoff_base``, ``backoff_max``, ``jitter``
        The retry policy (:class:`RetryPolicy`).
    ``cache``, ``cache_dir``
        ``cache=False`` disables the disk cache; ``cache_dir`` moves it; a
        :class:`DiskCache` may be passed directly.
    ``sleep``, ``rng``
        Injected by tests so that backoff costs no time and is reproducible.
    """

    name = "gemini"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        jitter: float = 0.5,
        cache: bool | DiskCache = True,
        cache_dir: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self.model = model
        self.base_url = base_url
        self.api_version = api_version
        self.timeout = float(timeout)
        self.retry = RetryPolicy(max_attempts, backoff_base, backoff_max, jitter)
        if isinstance(cache, DiskCache):
            self.cache: DiskCache | None = cache
        else:
            self.cache = DiskCache(cache_dir) if cache else None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._api_key = _Secret(_resolve_api_key(api_key))
        # Set after a 401/403/404: the key or model is wrong for every request, so
        # later calls fail at once instead of sending one doomed request per report.
        self._fatal: str | None = None
        self._client = self._make_client()
        self._transport_errors = _transport_errors()

    def __repr__(self) -> str:
        return (
            f"GeminiBackend(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_version={self.api_version!r}, timeout={self.timeout!r}, "
            f"max_attempts={self.retry.max_attempts!r}, cache={self.cache!r})"
        )

    # ----------------------------------------------------------------- client

    def _make_client(self) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:
            raise RewriteError(
                "the Gemini backend needs the google-genai package: pip install 'concord[gemini]'"
            ) from exc
        options: dict[str, Any] = {
            "api_version": self.api_version,
            # HttpOptions.timeout is in milliseconds (an int); 0 would mean "none".
            "timeout": max(1, round(self.timeout * 1000)),
        }
        if self.base_url is not None:
            options["base_url"] = self.base_url
        if "retry_options" in types.HttpOptions.model_fields:
            # attempts=1: the SDK makes one attempt and raises; our loop retries.
            options["retry_options"] = types.HttpRetryOptions(attempts=1)
        return genai.Client(
            api_key=self._api_key.reveal(),
            vertexai=False,  # ignore GOOGLE_GENAI_USE_VERTEXAI: this is the Gemini API
            http_options=types.HttpOptions(**options),
        )

    def _generate(self, prompt: str, schema: dict[str, Any]) -> str:
        """One request; returns the model's text or raises (SDK errors, transport, InvalidAnswer)."""
        from google.genai import types

        fields = types.GenerateContentConfig.model_fields
        config: dict[str, Any] = {
            "temperature": 0.0,
            "candidate_count": 1,
            "response_mime_type": "application/json",
            "response_schema": schema,
        }
        if "automatic_function_calling" in fields:
            config["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(
                disable=True
            )
        if "automatic_continuation" in fields:
            config["automatic_continuation"] = False  # one request per attempt
        response = self._client.models.generate_content(
            model=self.model, contents=prompt, config=types.GenerateContentConfig(**config)
        )
        text = response.text
        if not text:
            raise InvalidAnswer(f"empty answer ({_why_empty(response)})")
        return text

    # ----------------------------------------------------------------- operations

    def single_entity(self, report: str) -> list[str]:
        """Clinical sentences of ``report``, one entity each, temporal statements removed.

        The answer must keep the report's labels for all 13 findings (the labeler
        ignores temporal wording, so dropping "unchanged" is fine, inventing or
        losing a finding is not).  Any temporal wording the model left in is
        removed with :func:`core_model.text.temporal.remove_temporal` before the
        check.
        """
        if not isinstance(report, str):
            raise TypeError(f"report text must be str, not {type(report).__name__}")
        text = deidentify(_clinical_text(report))
        if not text.strip():
            return []
        expected = _finding_labels(label_report(report).labels)

        def check(payload: Any) -> list[str]:
            # The prompt asks for no temporal wording; the rule pass makes sure of it
            # (a no-op on a clean answer) so the contract holds whatever the model did.
            sentences = remove_temporal(_sentences_of(payload))
            _compare(expected, _labels_of(sentences))
            return sentences

        key = cache_key(
            model=self.model, prompt_version=PROMPT_VERSION, operation="single_entity", text=text
        )
        cached = self._cached(key, lambda v: check({"sentences": v}))
        if cached is not None:
            return cached
        prompt = SINGLE_ENTITY_PROMPT.replace("{report}", text)
        answer = self._ask("single_entity", prompt, _SINGLE_ENTITY_SCHEMA, check)
        self._store(key, answer, operation="single_entity")
        return answer

    def remove_entity(self, sentences: list[str], entity: str) -> list[str]:
        """``sentences`` without those that mention ``entity`` (one of the 13 findings).

        The model only chooses indices, so the sentences returned are the
        caller's own, unchanged.  The answer must leave ``entity`` not mentioned
        and every other finding's label as it was.  When ``entity`` is not
        mentioned to begin with, nothing is sent.
        """
        if entity not in FINDINGS:
            raise ValueError(
                f"not a CheXpert finding: {entity!r} (choose from {', '.join(FINDINGS)})"
            )
        sentences = [str(s) for s in sentences]
        if not sentences:
            return []
        before = _labels_of(sentences)
        if before[entity] is Assertion.NOT_MENTIONED:
            return list(sentences)
        numbered = "\n".join(
            f"{i}: {' '.join(deidentify(s).split())}" for i, s in enumerate(sentences)
        )
        expected = dict(before, **{entity: Assertion.NOT_MENTIONED})

        def check(payload: Any) -> list[int]:
            keep = _indices_of(payload, len(sentences))
            _compare(expected, _labels_of([sentences[i] for i in keep]))
            return keep

        key = cache_key(
            model=self.model,
            prompt_version=PROMPT_VERSION,
            operation="remove_entity",
            text=numbered,
            entity=entity,
        )
        keep = self._cached(key, lambda v: check({"keep": v}))
        if keep is None:
            prompt = (
                REMOVE_ENTITY_PROMPT.replace("{hint}", ENTITY_HINTS[entity])
                .replace("{entity}", entity)
                .replace("{sentences}", numbered)
            )
            keep = self._ask("remove_entity", prompt, _REMOVE_ENTITY_SCHEMA, check)
            self._store(key, keep, operation="remove_entity", entity=entity)
        return [sentences[i] for i in keep]

    # ----------------------------------------------------------------- cache

    def _cached(self, key: str, check: Callable[[Any], Any]) -> Any | None:
        """A cached answer that still validates (the labeler may have changed since)."""
        if self.cache is None:
            return None
        value = self.cache.get(key)
        if value is None:
            log.debug("gemini cache miss %s", key[:12])
            return None
        try:
            result = check(value)
        except InvalidAnswer as exc:
            log.info("gemini cache entry %s no longer validates (%s); asking again", key[:12], exc)
            return None
        log.debug("gemini cache hit %s", key[:12])
        return result

    def _store(self, key: str, value: Any, **meta: str) -> None:
        if self.cache is None:
            return
        try:
            self.cache.set(key, value, model=self.model, prompt_version=PROMPT_VERSION, **meta)
        except OSError as exc:
            # A full or read-only disk must not turn a good answer into a failure.
            log.warning("could not write the gemini cache (%s)", exc)

    # ----------------------------------------------------------------- retries

    def _ask(
        self,
        operation: str,
        prompt: str,
        schema: dict[str, Any],
        check: Callable[[Any], Any],
    ) -> Any:
        """Ask until an answer validates, retrying what may succeed next time."""
        from google.genai import errors

        if self._fatal is not None:
            raise RewriteError(self._fatal)
        attempts = self.retry.max_attempts
        reason = ""
        for attempt in range(1, attempts + 1):
            server_hint = 0.0
            try:
                text = self._generate(prompt, schema)
                return check(_parse_json(text))
            except InvalidAnswer as exc:
                reason = f"invalid answer: {exc}"
            except errors.APIError as exc:
                reason = self._describe_api_error(exc)
                if exc.code not in RETRYABLE_STATUS:
                    hint = _HINTS_BY_STATUS.get(exc.code)
                    message = f"Gemini {operation} request rejected: {reason}" + (
                        f" ({hint})" if hint else ""
                    )
                    if exc.code in FATAL_STATUS:
                        self._fatal = message
                    raise RewriteError(message) from None
                server_hint = _retry_delay(exc)
            except self._transport_errors as exc:
                reason = self._describe_transport_error(exc)
            except ValueError as exc:
                # A 200 whose body is not JSON (a proxy's page): the SDK's JSON
                # decoder raises ValueError (JSONDecodeError/UnknownApiResponseError).
                reason = f"unreadable response body ({type(exc).__name__})"
            if attempt == attempts:
                break
            wait = self.retry.delay(attempt, self._rng, at_least=server_hint)
            log.info(
                "Gemini %s attempt %d/%d failed: %s; retrying in %.1f s",
                operation,
                attempt,
                attempts,
                reason,
                wait,
            )
            self._sleep(wait)
        raise RewriteError(
            f"Gemini {operation} failed after {attempts} attempt{'s' if attempts > 1 else ''}; "
            f"last error: {reason}"
        )

    def _redact(self, text: str, limit: int = 300) -> str:
        """One line, at most ``limit`` characters, with the API key scrubbed out."""
        key = self._api_key.reveal()
        if key:
            text = text.replace(key, "[redacted]")
        text = " ".join(str(text).split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def _describe_api_error(self, exc: Any) -> str:
        status = getattr(exc, "status", None) or ""
        message = getattr(exc, "message", None) or ""
        return self._redact(
            f"HTTP {exc.code} {status}".rstrip() + (f": {message}" if message else "")
        )

    def _describe_transport_error(self, exc: BaseException) -> str:
        kind = type(exc).__name__
        if "Timeout" in kind:
            return f"no answer within {self.timeout:g} s ({kind})"
        detail = self._redact(str(exc), limit=160)
        return f"connection failed ({kind}{': ' + detail if detail else ''})"


# --------------------------------------------------------------------- helpers


def _clinical_text(report: str) -> str:
    """The FINDINGS/IMPRESSION text of a report (what the labeler reads), headings kept."""
    parts = []
    for section in clinical_sections(report):
        if section.heading:
            parts.append(f"{section.name.upper()}: {section.text}")
        else:
            parts.append(section.text)
    return "\n\n".join(parts)


def _parse_json(text: str) -> Any:
    """The JSON in a model answer (a stray Markdown fence around it is tolerated)."""
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, re.S)
    if fence:
        stripped = fence.group(1)
    try:
        return json.loads(stripped)
    except ValueError as exc:
        raise InvalidAnswer(f"not JSON ({exc.msg} at char {exc.pos})") from None


def _sentences_of(payload: Any) -> list[str]:
    if not isinstance(payload, dict) or not isinstance(payload.get("sentences"), list):
        raise InvalidAnswer('expected {"sentences": [...]}')
    out = []
    for item in payload["sentences"]:
        if not isinstance(item, str):
            raise InvalidAnswer("every sentence must be a string")
        text = " ".join(item.split())
        if text:
            out.append(text)
    return out


def _indices_of(payload: Any, n: int) -> list[int]:
    if not isinstance(payload, dict) or not isinstance(payload.get("keep"), list):
        raise InvalidAnswer('expected {"keep": [...]}')
    keep = payload["keep"]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in keep):
        raise InvalidAnswer("keep must list integer sentence numbers")
    if any(i < 0 or i >= n for i in keep):
        raise InvalidAnswer(f"keep has a sentence number outside 0..{n - 1}")
    return sorted(set(keep))


def _labels_of(sentences: Sequence[str]) -> dict[str, Assertion]:
    """Labels of a list of sentences, each labelled on its own and aggregated.

    The same reading as :mod:`core_model.text.edits` uses on the backend's
    output, so an answer accepted here is one the edits accept too.
    """
    labeler = default_labeler()
    return _finding_labels(
        labeler.aggregate(tuple(labeler.label_sentence(s) for s in sentences)).labels
    )


def _finding_labels(labels: dict[str, Assertion]) -> dict[str, Assertion]:
    # "No Finding" is derived from the others, so comparing the 13 findings suffices.
    return {o: labels[o] for o in FINDINGS}


def _compare(expected: dict[str, Assertion], actual: dict[str, Assertion]) -> None:
    changed = [
        f"{o}: {expected[o].value} -> {actual[o].value}"
        for o in FINDINGS
        if expected[o] is not actual[o]
    ]
    if changed:
        raise InvalidAnswer("labels changed (" + "; ".join(changed) + ")")


def _why_empty(response: Any) -> str:
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        return f"prompt blocked: {feedback.block_reason}"
    candidates = getattr(response, "candidates", None) or []
    if candidates and getattr(candidates[0], "finish_reason", None):
        return f"finish reason {candidates[0].finish_reason}"
    return "no candidates"


def _retry_delay(exc: Any) -> float:
    """The server's own hint (RetryInfo.retryDelay, or a Retry-After header) in seconds."""
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else None
    for item in (error or {}).get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(item.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None:
        value = headers.get("retry-after")
        if value and value.strip().isdigit():
            return float(value.strip())
    return 0.0
