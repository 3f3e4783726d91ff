"""The mixer design space: `MixerSpec`, its choices, its rules, its JSON schema, the baselines.

Every field is an enum (or a number from a short list). A `MixerSpec` is always valid and
canonical: construction checks every choice and every combination rule, and resets settings
that have no effect (e.g. `decay_param` when `decay='none'`) to their defaults, so two specs
that render the same code compare and hash equal.

    spec = MixerSpec.from_dict({"update_rule": "delta", "decay": "scalar"})
    spec.digest()                       # '3f1c...' (canonical, 16 hex digits)
    BASELINE_SPECS["gated_deltanet"]    # the hand-written baselines are points of the space
    spec_schema()                       # JSON schema with an enum for every field
    spec_problems({...})                # what is wrong with a dict, without raising

Rendering to code is `evolve.model.render`; edits for spec-mode proposals are
`evolve.model.edits`; the model-free mutator is `evolve.search.mutator`. No torch here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from evolve import EvolveError
from evolve.config.loading import field_docs

Value = str | int | float | None

# Every field's choices, in the order a schema lists them, each with a short note that the
# schema's descriptions and the mutator's motivations quote.
OPTIONS: dict[str, dict[Value, str]] = {
    "update_rule": {
        "linear": "additive state S += k v^T that never overwrites (linear attention, GLA)",
        "delta": "delta rule S += beta k (v - S^T k) that overwrites what a key held (DeltaNet; "
                 "with a decay, Gated DeltaNet)",
        "softmax": "causal softmax attention: quadratic, a reference only",
    },
    "feature_map": {
        "identity": "no feature map on q and k",
        "elu_plus_one": "elu(x)+1, positive features (Katharopoulos et al.)",
        "relu": "relu, sparse non-negative features",
        "silu": "silu, smooth features",
        "sigmoid": "sigmoid, bounded positive features",
        "softmax": "softmax over the head dimension, features that sum to one",
        "relu_squared": "relu(x)^2, sharper non-negative features (Primer)",
    },
    "qk_norm": {
        "none": "no normalisation of q and k",
        "l2": "unit-length q and k per head (the delta rule needs unit-norm keys)",
        "rmsnorm": "RMSNorm with a learned gain on q and k per head",
    },
    "conv_size": {
        None: "the run's MixerConfig.conv_size, as the baselines do",
        0: "no short convolution",
        2: "causal short convolution of width 2",
        3: "causal short convolution of width 3",
        4: "causal short convolution of width 4",
    },
    "conv_targets": {
        "qkv": "short convolution on q, k and v",
        "qk": "short convolution on q and k only",
        "kv": "short convolution on k and v only",
        "v": "short convolution on v only",
    },
    "no_conv_act": {
        "none": "no activation on q/k/v streams without a short convolution",
        "silu": "silu on q/k/v streams without a short convolution (the conv has its own silu)",
    },
    "decay": {
        "none": "no forgetting: the state only accumulates",
        "scalar": "data-dependent decay, one per head and token (Mamba-2, Gated DeltaNet)",
        "channel": "data-dependent decay per key channel (GLA)",
        "fixed": "fixed multi-scale decay per head, not learned (RetNet)",
        "learned": "data-independent decay per head, learned, initialised as RetNet's",
    },
    "decay_param": {
        "mamba2": "log-decay -exp(A_log) * softplus(w x + dt_bias) (Mamba-2)",
        "logsigmoid": "log-decay logsigmoid(w x) / gate_normalizer (GLA)",
        "rwkv7": "log-decay -exp(-1/2) * sigmoid(w x + b), a decay in [0.55, 1] (RWKV-7)",
    },
    "gate_normalizer": {
        1: "logsigmoid decay not rescaled (fast forgetting at init)",
        4: "logsigmoid decay divided by 4",
        8: "logsigmoid decay divided by 8",
        16: "logsigmoid decay divided by 16, keeping it near 1 at init (GLA)",
    },
    "num_householder": {
        1: "one delta step per token (DeltaNet, Gated DeltaNet, KDA)",
        2: "two delta (Householder) steps per token, each with its own key, value and beta "
           "(Gated DeltaProduct, n_h = 2): a richer state transition",
        3: "three delta (Householder) steps per token (DeltaProduct, n_h = 3)",
    },
    "removal_key": {
        "write_key": "the delta rule removes along the key it writes (DeltaNet)",
        "separate": "generalized delta rule (RWKV-7): removal along a separate unit key "
                    "kk = l2(k * k_k), scaled per channel by the in-context learning rate "
                    "a = beta (per key channel), distinct from the write key k (1 + (a - 1) k_a)",
    },
    "beta": {
        "none": "no write strength (beta = 1: the delta rule fully overwrites)",
        "sigmoid": "data-dependent write strength sigmoid(w x) in (0, 1) (DeltaNet)",
        "sigmoid2": "write strength 2*sigmoid(w x) in (0, 2), allowing negative eigenvalues "
                    "(DeltaProduct, RWKV-7)",
        "constant": "data-independent write strength per head, sigmoid of a learned logit",
    },
    "out_norm": {
        "none": "no output normalisation",
        "rmsnorm": "RMSNorm per head on the output (with a silu gate: GLA's gated RMSNorm)",
    },
    "out_gate": {
        "none": "no output gate",
        "silu": "output multiplied by silu(w x) (GLA, Gated DeltaNet)",
        "sigmoid": "output multiplied by sigmoid(w x) (gated attention)",
    },
    "local_path": {
        "none": "a single global path",
        "conv": "a local path: width-4 causal depthwise convolution of v added to the output",
        "window": "a local path: sliding-window softmax attention over the last local_window "
                  "tokens, fused with the global path (Based-style hybrid)",
    },
    "local_window": {
        16: "local attention window of 16 tokens",
        32: "local attention window of 32 tokens",
        64: "local attention window of 64 tokens",
        128: "local attention window of 128 tokens",
    },
    "fusion": {
        "sum": "local and global paths added",
        "gate": "local path scaled by a learned per-head sigmoid gate of x before the sum",
    },
    "key_ratio": {
        0.5: "key width half the model width (GLA's expand_k)",
        1.0: "key width equal to the model width",
        2.0: "key width twice the model width: a larger state",
    },
    "value_ratio": {
        1.0: "value width equal to the model width",
        2.0: "value width twice the model width: a larger state (Gated DeltaNet's expand_v)",
    },
    "position": {
        "none": "no position encoding (recurrent mixers need none)",
        "learned": "learned absolute position embeddings added to the input",
    },
}


class SpecError(EvolveError, ValueError):
    """A spec is invalid; the message names each offending field and its valid choices."""


@dataclass(frozen=True, kw_only=True)
class MixerSpec:
    """One point of the design space; see OPTIONS for what each choice means."""

    update_rule: str = "delta"
    """How the state is written: 'linear' (additive), 'delta' (overwrite), 'softmax' (quadratic)."""
    feature_map: str = "identity"
    """Feature map applied to q and k per head, before qk_norm."""
    qk_norm: str = "l2"
    """Normalisation of q and k per head, after the feature map."""
    conv_size: int | None = None
    """Width of the causal short convolution; None uses the run's MixerConfig.conv_size."""
    conv_targets: str = "qkv"
    """Which of q, k, v get the short convolution."""
    no_conv_act: str = "none"
    """Activation on q/k/v streams that have no short convolution."""
    decay: str = "none"
    """Granularity of the state decay (forget gate)."""
    decay_param: str = "mamba2"
    """Parameterisation of a data-dependent decay ('scalar' or 'channel')."""
    gate_normalizer: int = 16
    """Divisor of the logsigmoid decay (decay_param='logsigmoid' only)."""
    num_householder: int = 1
    """Delta steps per token (update_rule='delta' only): DeltaProduct's n_h."""
    removal_key: str = "write_key"
    """What the delta rule removes along (update_rule='delta' only): the write key, or RWKV-7's
    separate removal key and per-channel in-context learning rate."""
    beta: str = "sigmoid"
    """Write strength: the delta rule's beta, or an input gate on v for the linear rule."""
    out_norm: str = "rmsnorm"
    """Normalisation of each head's output."""
    out_gate: str = "none"
    """Gate on each head's output, computed from the mixer's input."""
    local_path: str = "none"
    """A local path fused with the global (recurrent) path."""
    local_window: int = 64
    """Window of the sliding-window local path (local_path='window' only)."""
    fusion: str = "sum"
    """How the local path joins the global one (local_path != 'none' only)."""
    key_ratio: float = 1.0
    """Key (and query) width as a multiple of the model width."""
    value_ratio: float = 1.0
    """Value width as a multiple of the model width."""
    position: str = "none"
    """Position encoding added to the mixer's input."""

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in FIELDS}
        problems = spec_problems(values)
        if problems:
            raise SpecError("invalid mixer spec:\n  " + "\n  ".join(p.message for p in problems))
        values = {name: coerce_choice(name, value) for name, value in values.items()}
        for name, value in canonical(values).items():
            object.__setattr__(self, name, value)

    @property
    def is_quadratic(self) -> bool:
        """True for softmax attention, which the cost gate rejects as a candidate."""
        return self.update_rule == "softmax"

    def to_dict(self) -> dict[str, Value]:
        return {name: getattr(self, name) for name in FIELDS}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixerSpec:
        """Strict: an unknown key is an error listing the valid keys; missing keys get defaults."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a mixer spec must be a JSON object, got {type(data).__name__}")
        unknown = [key for key in data if key not in OPTIONS]
        if unknown:
            raise SpecError(f"unknown spec field(s) {', '.join(map(repr, unknown))}; valid "
                            f"fields: {', '.join(FIELDS)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> MixerSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"mixer spec is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def digest(self) -> str:
        """Canonical hash (16 hex digits): equal for specs that render the same code."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> MixerSpec:
        return dataclasses.replace(self, **changes)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MixerSpec))
assert set(FIELDS) == set(OPTIONS), "every MixerSpec field needs its OPTIONS entry"

# Fields whose value matters only under some condition, and the neutral value they take
# otherwise; `canonical` applies this so that inert differences never make two specs "distinct".
_INERT: tuple[tuple[str, Value, Any], ...] = (
    ("conv_targets", "qkv", lambda s: s["conv_size"] == 0),
    ("no_conv_act", "none", lambda s: s["conv_size"] not in (None, 0)
     and s["conv_targets"] == "qkv"),
    ("decay_param", "mamba2", lambda s: s["decay"] not in ("scalar", "channel")),
    ("gate_normalizer", 16, lambda s: s["decay"] not in ("scalar", "channel")
     or s["decay_param"] != "logsigmoid"),
    ("local_window", 64, lambda s: s["local_path"] != "window"),
    ("num_householder", 1, lambda s: s["update_rule"] != "delta"),
    ("removal_key", "write_key", lambda s: s["update_rule"] != "delta"),
    ("fusion", "sum", lambda s: s["local_path"] == "none"),
)


def canonical(values: Mapping[str, Value]) -> dict[str, Value]:
    """`values` with every setting that has no effect reset to its neutral value."""
    out = dict(values)
    for name, neutral, inert in _INERT:
        if inert(out):
            out[name] = neutral
    return out


def inert_fields(spec: MixerSpec) -> list[str]:
    """Fields of `spec` that currently have no effect (changing them alone changes nothing)."""
    values = spec.to_dict()
    return [name for name, _, inert in _INERT if inert(values)]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One broken rule: what is wrong and the smallest change that fixes it."""

    message: str
    """Names the offending fields, their values and what to choose instead."""
    why: str
    """The reason in a few words, for the motivations of repaired specs."""
    fix: dict[str, Value]
    """Field -> value that resolves the problem (used by `repair`)."""


def coerce_choice(name: str, value: Any) -> Value:
    """The choice of `name` equal to `value` (so JSON's 1 is the choice 1.0), else SpecError."""
    if not isinstance(value, bool):  # True == 1 in Python, but never a valid choice here
        for choice in OPTIONS[name]:
            if choice == value and (choice is None) == (value is None):
                return choice
    raise SpecError(f"{name}={value!r} is not a valid choice; valid: "
                    f"{', '.join(json.dumps(c) for c in OPTIONS[name])}")


def _rules(s: Mapping[str, Value]) -> list[Problem]:
    out: list[Problem] = []

    def bad(message: str, why: str, **fix: Value) -> None:
        out.append(Problem(message=message, why=why, fix=fix))

    rule = s["update_rule"]
    if rule == "softmax":
        for name, neutral in (("feature_map", "identity"), ("decay", "none"), ("beta", "none"),
                              ("local_path", "none")):
            if s[name] != neutral:
                bad(f"{name}={s[name]!r} has no meaning with update_rule='softmax' (softmax "
                    f"attention has no feature map, state, decay or write strength, and is "
                    f"already local); use {name}={neutral!r}", f"softmax attention has no {name}",
                    **{name: neutral})
    if rule == "delta" and s["qk_norm"] != "l2":
        bad(f"qk_norm={s['qk_norm']!r} with update_rule='delta': the delta rule is stable only "
            f"with unit-length keys; use qk_norm='l2'", "the delta rule needs unit-length keys",
            qk_norm="l2")
    if rule == "delta" and s["num_householder"] != 1 and s["removal_key"] == "separate":
        bad(f"num_householder={s['num_householder']} with removal_key='separate': the "
            "generalized delta rule (RWKV-7) takes one step per token; use num_householder=1",
            "the generalized delta rule has one step per token", num_householder=1)
    if rule == "delta" and s["num_householder"] != 1 and s["decay"] == "channel":
        bad(f"decay='channel' with num_householder={s['num_householder']}: Gated "
            "DeltaProduct decays per head; use decay 'scalar', 'fixed' or 'learned' (or "
            "num_householder=1 for KDA's per-channel decay)",
            "DeltaProduct has no per-channel decay", decay="scalar")
    if rule == "delta" and s["removal_key"] == "separate" and s["beta"] not in ("sigmoid",
                                                                                "sigmoid2"):
        bad(f"beta={s['beta']!r} with removal_key='separate': the in-context learning rate "
            "is data-dependent per key channel; use beta 'sigmoid' or 'sigmoid2'",
            "the in-context learning rate is data-dependent", beta="sigmoid")
    if rule == "linear" and s["beta"] == "sigmoid2":
        bad("beta='sigmoid2' with update_rule='linear': the range (0, 2) matters only for the "
            "delta rule's transition I - beta k k^T; use beta 'sigmoid' with the linear rule",
            "2*sigmoid matters only for the delta rule", beta="sigmoid")
    return out


def spec_problems(values: Mapping[str, Any]) -> list[Problem]:
    """Everything wrong with `values` (a possibly partial field -> value mapping).

    Bad choices are reported first (their fix is the field's default); combination rules are
    checked only once every choice is valid.
    """
    defaults = MixerSpec.__dataclass_fields__
    out: list[Problem] = []
    full: dict[str, Value] = {}
    for name in FIELDS:
        value = values.get(name, defaults[name].default)
        try:
            full[name] = coerce_choice(name, value)
        except SpecError as exc:
            out.append(Problem(message=str(exc), why=f"{name} had no valid value",
                               fix={name: defaults[name].default}))
    for name in values:
        if name not in OPTIONS:
            out.append(Problem(message=f"unknown spec field {name!r}; valid fields: "
                                       f"{', '.join(FIELDS)}", why="unknown field", fix={}))
    return out or _rules(full)


def repair(values: Mapping[str, Value], *, keep: set[str] | frozenset[str] = frozenset()
           ) -> tuple[dict[str, Value], dict[str, str]] | None:
    """Apply rule fixes until `values` is valid; None if a fix would change a field in `keep`.

    Returns the repaired values and, for each field a fix changed, the reason in a few words.
    """
    current = dict(values)
    fixed: dict[str, str] = {}
    for _ in range(len(FIELDS)):
        problems = spec_problems(current)
        if not problems:
            return current, fixed
        problem = problems[0]
        if not problem.fix or keep & problem.fix.keys():
            return None
        current.update(problem.fix)
        fixed.update(dict.fromkeys(problem.fix, problem.why))
    return None


def spec_distance(a: MixerSpec, b: MixerSpec) -> int:
    """Number of fields in which two (canonical) specs differ."""
    return sum(getattr(a, name) != getattr(b, name) for name in FIELDS)


@cache
def _docs() -> dict[str, str]:
    return field_docs(MixerSpec)


def field_schema(name: str, choices: list[Value] | None = None) -> dict[str, Any]:
    """JSON schema of one field: an enum of `choices` (default: all), described with notes."""
    choices = list(OPTIONS[name]) if choices is None else choices
    notes = "; ".join(f"{json.dumps(c)}: {OPTIONS[name][c]}" for c in choices)
    return {"description": f"{_docs().get(name, '')} Choices: {notes}.", "enum": choices}


def spec_schema(*, allow_quadratic: bool = False) -> dict[str, Any]:
    """JSON schema of a full spec: every field required, an enum each, no other keys."""
    properties = {}
    for name in FIELDS:
        choices = [c for c in OPTIONS[name]
                   if allow_quadratic or not (name == "update_rule" and c == "softmax")]
        properties[name] = field_schema(name, choices)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "MixerSpec",
            "type": "object", "properties": properties, "required": list(FIELDS),
            "additionalProperties": False}


BASELINE_SPECS: dict[str, MixerSpec] = {
    "linear_attention": MixerSpec(update_rule="linear", feature_map="elu_plus_one",
                                  qk_norm="none", beta="none", out_norm="rmsnorm"),
    "deltanet": MixerSpec(update_rule="delta", qk_norm="l2", no_conv_act="silu",
                          beta="sigmoid", out_norm="rmsnorm"),
    "gated_deltanet": MixerSpec(update_rule="delta", qk_norm="l2", no_conv_act="silu",
                                decay="scalar", decay_param="mamba2", beta="sigmoid",
                                out_norm="rmsnorm", out_gate="silu"),
    "gla": MixerSpec(update_rule="linear", qk_norm="none", decay="channel",
                     decay_param="logsigmoid", gate_normalizer=16, beta="none",
                     out_norm="rmsnorm", out_gate="silu"),
    # Mamba-2's state update as the space writes it: additive, scalar data-dependent decay
    # (GLA with one gate per head, fla's simple_gla); Mamba-2's dt-scaled input is not a choice
    "mamba2": MixerSpec(update_rule="linear", qk_norm="none", no_conv_act="silu",
                        decay="scalar", decay_param="mamba2", beta="none",
                        out_norm="rmsnorm", out_gate="silu"),
    "kda": MixerSpec(update_rule="delta", qk_norm="l2", no_conv_act="silu", decay="channel",
                     decay_param="mamba2", beta="sigmoid", out_norm="rmsnorm",
                     out_gate="sigmoid"),
    "gated_deltaproduct": MixerSpec(update_rule="delta", qk_norm="l2", no_conv_act="silu",
                                    decay="scalar", decay_param="mamba2", num_householder=2,
                                    beta="sigmoid2", out_norm="rmsnorm", out_gate="silu"),
    "rwkv7": MixerSpec(update_rule="delta", qk_norm="l2", no_conv_act="silu", decay="channel",
                       decay_param="rwkv7", removal_key="separate", beta="sigmoid",
                       out_norm="rmsnorm", out_gate="sigmoid"),
    "softmax": MixerSpec(update_rule="softmax", qk_norm="none", beta="none", out_norm="none",
                         position="learned"),
}


def baseline_name(spec: MixerSpec) -> str | None:
    """The baseline that `spec` is, if any."""
    return next((name for name, s in BASELINE_SPECS.items() if s == spec), None)
