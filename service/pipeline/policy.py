"""The request policy all doors share: which served model a request gets, how its log-probabilities become text
(greedy, exactly NeMo's, or beam search with hotwords), and whether that text is given in written form."""

from __future__ import annotations

from dataclasses import dataclass

from service.catalog import Catalog, ServedModel
from service.errors import BadRequest
from service.recognition.beam import Decoding, HotwordError, parse_hotwords
from service.recognition.written import DIGITS, Writing, WrittenForm

GREEDY = Decoding()
DECODINGS = ("default", "greedy", "beam")


@dataclass(frozen=True)
class DecodingRules:
    """ASR_DECODING and the hotword limits (service/settings.py)."""

    default: str = "greedy"  # what `decoding=default` (or none) means: greedy or beam
    hotword_weight: float = 10.0
    max_hotwords: int = 100
    max_hotword_words: int = 5


@dataclass(frozen=True)
class WritingRules:
    """ASR_ITN and ASR_ITN_DIGITS (service/settings.py)."""

    default: bool = False  # what a request without `itn` gets
    digits: str = "devanagari"


class ItnUnsupported(BadRequest):
    code = "itn_unsupported"


class Policy:
    """The served models and the decoding and writing rules: a request's fields -> the model, decoding and
    written form it gets."""

    def __init__(self, catalog: Catalog, rules: DecodingRules, writing: WritingRules | None = None) -> None:
        self.catalog, self.rules = catalog, rules
        self.writing_rules = writing or WritingRules()
        self.written_form = WrittenForm()

    def model(self, model: str = "", language: str = "") -> ServedModel:
        """A name (or tag) and/or an ISO 639-1 language -> the served model (catalog.select; 400 when none)."""
        return self.catalog.select(model, language)

    def decoding(self, name: str, hotwords: str) -> Decoding:
        """A request's `decoding` and `hotwords` fields -> how to decode. Hotwords imply beam search; asking for
        greedy decoding with hotwords is a contradiction (400)."""
        rules = self.rules
        try:
            phrases = parse_hotwords(hotwords, rules.hotword_weight, rules.max_hotwords, rules.max_hotword_words)
        except HotwordError as exc:
            raise BadRequest(str(exc), "hotwords") from None
        if name not in ("", *DECODINGS):
            raise BadRequest(f"decoding must be greedy or beam, not {name!r}", "decoding")
        if phrases and name == "greedy":
            raise BadRequest("hotwords need beam search: leave decoding out or set it to beam", "hotwords")
        beam = bool(phrases) or name == "beam" or (name in ("", "default") and rules.default == "beam")
        return Decoding(beam=True, hotwords=phrases) if beam else GREEDY

    def writing(self, served: ServedModel, itn: bool | None, digits: str = "") -> Writing | None:
        """A request's `itn` (None: not given) and `itn_digits` fields -> the written form to give, or None for
        the text as recognised. Asking for it from a model without grammars is a 400; the server's default
        (ASR_ITN) leaves such a model's text as spoken."""
        if digits not in ("", "default", *DIGITS):
            raise BadRequest(f"itn_digits must be {' or '.join(DIGITS)}, not {digits!r}", "itn_digits")
        wanted = self.writing_rules.default if itn is None else itn
        if not wanted:
            return None
        spec = served.manifest.itn
        if spec is None or served.directory is None:
            if itn is None:
                return None
            raise ItnUnsupported(
                f"the model {served.name!r} has no written-form (ITN) grammars for its language "
                f"({served.language}): leave itn out or set it to false",
                "itn",
            )
        chosen = self.writing_rules.digits if digits in ("", "default") else digits
        return Writing(self.written_form.grammars(served.directory, spec), chosen)

    def preload_writing(self) -> None:
        """With ASR_ITN on, read every served model's grammars now rather than at its first request."""
        if self.writing_rules.default:
            for served in self.catalog.models:
                if served.manifest.itn is not None and served.directory is not None:
                    self.written_form.grammars(served.directory, served.manifest.itn)
