"""Training the self-correction turns in train_math_apo.py: episodes -> per-turn rewards, baselines and `PolicySample`s.

Stage 2 with `--train_correction` samples whole PAG episodes from the current policy
(attempt, verify, revise after a "wrong" verdict; apo.episodes.run_episodes) and trains
every turn the model generated (Jiang et al., 2025, "PAG: Multi-Turn Reinforced LLM
Self-Correction with Policy as Generative Verifier", arXiv 2506.10406, section 3):

  attempt y_0          r = c(y_0)                                   c = graded correctness in {0, 1}
  verify of y_k        r = 1[verdict == truth of y_k]               unparsed or truncated verdict -> 0
                       (verify_reward "outcome": r = c(y_k) after "correct", c(y_{k+1}) after "wrong")
  revise y_k, k >= 1   r = c(y_k) + alpha * (c(y_k) - c(y_{k-1}))   alpha = cfg.revision_bonus_alpha

A truncated attempt or revision has c = 0 (A*-PO's convention). Rewards are turn-independent:
a turn is trained on its own reward only, nothing flows back into earlier turns.

Baselines b (the A*-PO regression target is r - b, the advantage-weighted loss weights r - b):
  * first attempts: V*(x) from stage 1, the `v_star` list given;
  * verify and revise contexts, which have no offline samples: `TurnBaselines`, per
    baseline group a running mean of the observed outcomes until the group has seen
    `turn_baseline_warmup` of them, then a `ValueHead` on the policy's hidden state at the
    final prompt token, refitted online on a buffer of observed outcomes. A batch's
    baselines are computed before the batch updates them, so no sample sets its own baseline.

Two refinements over a plain per-role mean, both valid baselines because they depend only
on the context, never on the turn's own response:
  * The revise head predicts the revision's correctness p = E[c(y_k) | context] (a value
    in [0, 1], as ValueHead outputs) and the baseline is (1 + alpha) * p - alpha * c(y_{k-1}),
    the exact expectation of the revise reward: the bonus term -alpha * c(y_{k-1}) is
    known from the context and needs no learning.
  * With `turn_baseline_split_by_truth` (default) each role is split by the truth of the
    attempt in its context (checked by a verify turn, revised by a revise turn), 4 groups.
    For verification this is a per-class baseline: advantages are centred within attempts
    that were right and within attempts that were wrong, so a verifier that says "wrong"
    to everything gets no net push from the majority class (the known collapse, PAG sec. 4).

Two options of the verify turn's training, off in PAG's recipe and on in the demo
(docs/self_correction.md, "Which verdict reward"): `balance_verify_truth` trains as many
verify turns of right attempts as of wrong ones (`balanced_verify_subset`), and
`counterfactual_verdicts` adds, beside each verify turn, the verdict it did not say with the
"match" reward it would have earned (`counterfactual_verdict_samples`).

Advantages are (r - b) scaled per advantage group by `role_normalized_advantages`:
attempt and revise tokens form the "solution" group, verify tokens the "verification"
group (PAG: "advantages are normalised separately for attempt and verify tokens").

Only the model's own tokens are trained: each sample's `prompt_ids` is the full context the
model saw for that turn (chat template, system prompt, inserted verify/revise user turns,
earlier turns) and `response_ids` are the tokens it generated, so the loss mask of
`apo_algorithm.collate_samples` covers exactly the model's tokens.

The collapse guard (`VerdictCollapseGuard`, held by `TurnBaselines`) watches the last
`collapse_window` parsed verdicts and flags, with a logged warning, when more than
`cfg.collapse_threshold` of them are the same verdict. See docs/self_correction.md.

Usage inside the stage-2 loop (train_math_apo.py):

>>> turn_baselines = TurnBaselines(cfg, hidden_size)                           # doctest: +SKIP
>>> episodes = run_episodes(policy, tokenizer, problems, cfg, unparsed_verdict_revises=False)  # doctest: +SKIP
>>> samples, metrics = correction_samples(episodes, golds, v_star, turn_baselines, policy,
...                                       tokenizer, cfg, report)              # doctest: +SKIP
>>> advantages = role_normalized_advantages(samples)                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from apo_algorithm import PolicySample, ValueHead, fit_value_head, prompt_hidden_states
from apo.metrics import episode_records, summarize
from apo.grading import GradingReport, extract_answer
from apo.strict_grading import rewards_by_rule
from apo.decoding import left_pad
from apo.episodes import Episode, Turn

if TYPE_CHECKING:
    from apo.config import A_PO_Config

logger = logging.getLogger(__name__)

SOLUTION_ROLES = ("attempt", "revise")
TURN_ROLES = ("attempt", "verify", "revise")
# PAG normalises "attempt" and "verify" tokens apart; a revision is a solution, so it joins attempts.
ADVANTAGE_GROUPS = {"attempt": "solution", "revise": "solution", "verify": "verification"}
# PAG's two verdict sentences (its verify prompt asks for one of them at the end; apo.episodes.parse_verdict).
VERDICT_SENTENCES = {"correct": "The answer is correct.", "wrong": "The answer is wrong."}
# Baseline of a group that has observed nothing yet: the value of a fair coin for a {0, 1} outcome.
PRIOR_OUTCOME = 0.5


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class CorrectionTrainingConfig:
    """Settings of the turn baselines, the collapse guard and the advantage normalisation.

    Parsed next to A_PO_Config: `parse_config((A_PO_Config, CorrectionTrainingConfig))`.
    """

    _argument_group_name = "self-correction turn training"  # the --help section

    turn_baseline: Literal["value_head", "running_mean"] = field(default="value_head", metadata=_help(
        "Baseline of verify/revise contexts: 'value_head' = a ValueHead on the policy's hidden state, fitted "
        "online once a group has seen turn_baseline_warmup outcomes (a running mean before); 'running_mean' = "
        "the mean of the buffered outcomes only (no hidden-state pass)."))
    turn_baseline_warmup: int = field(default=64, metadata=_help(
        "Observed outcomes a baseline group needs before its value head is fitted and used."))
    turn_baseline_buffer_size: int = field(default=4096, metadata=_help(
        "Most recent (hidden state, outcome) pairs kept per baseline group; the running mean and the head's "
        "online fit use this window."))
    turn_baseline_epochs: int = field(default=2, metadata=_help(
        "Epochs over the buffer each time a warmed-up group's head is refitted (once per training batch)."))
    turn_baseline_batch_size: int = field(default=64, metadata=_help("Mini-batch size of the online head fit."))
    turn_baseline_split_by_truth: bool = field(default=True, metadata=_help(
        "Split each role's baseline by the truth of the attempt in its context (checked by verify, revised by "
        "revise): 4 groups instead of 2. For the verifier this is a per-class baseline that resists collapse."))
    turn_feature_batch_size: int = field(default=8, metadata=_help(
        "Prompts per forward pass when computing the hidden states of verify/revise contexts."))
    collapse_window: int = field(default=256, metadata=_help(
        "The collapse guard looks at the last this-many parsed verdicts (across training batches)."))
    collapse_min_verdicts: int = field(default=32, metadata=_help(
        "The guard flags nothing until its window holds at least this many parsed verdicts."))
    normalize_turn_advantages: bool = field(default=True, metadata=_help(
        "Scale each advantage group to unit root mean square (role_normalized_advantages; PAG normalises per "
        "role). false = advantages stay r - b, the scale of single-turn A*-PO, so a first attempt is pushed exactly "
        "as in a run without train_correction (the demo's choice, whose beta2 was tuned on that scale)."))
    balance_verify_truth: bool = field(default=False, metadata=_help(
        "Train each batch on as many verify turns of right attempts as of wrong ones (balanced_verify_subset: the "
        "majority class is cut to the minority's count, on each process), so a verdict that ignores the attempt "
        "gains nothing on average whatever the accuracy. Off in PAG's recipe; the demo's choice."))
    counterfactual_verdicts: bool = field(default=False, metadata=_help(
        "verify_reward match only: each verify turn also trains the verdict it did not say, as PAG's sentence "
        "('The answer is correct.' or 'The answer is wrong.'; both after an unparsed verdict), with the reward that "
        "verdict earns, known from the truth of the attempt without sampling it (counterfactual_verdict_samples). "
        "A verifier that has stopped saying one verdict still learns when to say it. Off in PAG's recipe; the "
        "demo's choice."))
    center_turn_advantages: bool = field(default=False, metadata=_help(
        "Also subtract each advantage group's batch mean before scaling (PPO-style whitening, as PAG's PPO "
        "does; role_normalized_advantages(center=True)). Off by default: the baselines already centre the "
        "advantages and V* keeps its A*-PO meaning; only the scale is normalised."))

    def __post_init__(self) -> None:
        for name in ("turn_baseline_warmup", "turn_baseline_buffer_size", "turn_baseline_epochs",
                     "turn_baseline_batch_size", "turn_feature_batch_size", "collapse_window",
                     "collapse_min_verdicts"):
            if getattr(self, name) < 1:
                raise ValueError(f"CorrectionTrainingConfig.{name}={getattr(self, name)!r} is invalid: "
                                 "use a positive integer.")
        if self.collapse_min_verdicts > self.collapse_window:
            raise ValueError(f"CorrectionTrainingConfig.collapse_min_verdicts={self.collapse_min_verdicts} exceeds "
                             f"collapse_window={self.collapse_window}: the guard could never fire; lower it.")
        if self.center_turn_advantages and not self.normalize_turn_advantages:
            raise ValueError("CorrectionTrainingConfig.center_turn_advantages=true needs normalize_turn_advantages="
                             "true (centring is part of the per-role whitening); set one of them the other way.")
        if self.turn_baseline_warmup > self.turn_baseline_buffer_size:
            raise ValueError(f"CorrectionTrainingConfig.turn_baseline_warmup={self.turn_baseline_warmup} exceeds "
                             f"turn_baseline_buffer_size={self.turn_baseline_buffer_size}: raise the buffer.")


# --- the collapse guard ---

class VerdictCollapseGuard:
    """Flags a verifier that says the same verdict to (almost) everything.

    Keeps the last `window` parsed verdicts with the truth of the attempt each one checked.
    `update` flags a collapse when the window holds at least `min_verdicts` verdicts and more
    than `threshold` of them are "wrong" (or "correct"); each flagged batch logs a warning
    with the share of attempts that really were wrong, which says whether the verdicts are
    degenerate (a collapse) or merely follow an extreme base rate.
    """

    def __init__(self, window: int, min_verdicts: int, threshold: float):
        self.window: deque[tuple[str, bool]] = deque(maxlen=window)
        self.min_verdicts, self.threshold = min_verdicts, threshold

    def update(self, verdicts: Sequence[str | None], checked_correct: Sequence[bool]) -> dict[str, float | None]:
        """Add one batch's verdicts (None = unparsed, not added) and return the guard's metrics:
        collapse_flag (1.0 or 0.0), collapse_verdict_window (verdicts held),
        window_said_wrong_share, window_attempt_wrong_share (None while the window is empty)."""
        for verdict, truth in zip(verdicts, checked_correct, strict=True):
            if verdict is not None:
                self.window.append((verdict, bool(truth)))
        held = len(self.window)
        said_wrong = sum(verdict == "wrong" for verdict, _ in self.window) / held if held else None
        attempt_wrong = sum(not truth for _, truth in self.window) / held if held else None
        collapsed = None
        if said_wrong is not None and held >= self.min_verdicts:
            if said_wrong > self.threshold:
                collapsed = "wrong"
            elif 1.0 - said_wrong > self.threshold:
                collapsed = "correct"
        if collapsed is not None:
            logger.warning(
                "verifier collapse: %.1f%% of the last %d parsed verdicts say %r (threshold %.1f%%); %.1f%% of the "
                "attempts they checked were wrong. A verifier that ignores the attempt gives the same verdict "
                "regardless of that share: see docs/self_correction.md", 100 * max(said_wrong, 1 - said_wrong),
                held, collapsed, 100 * self.threshold, 100 * attempt_wrong)
        return {"collapse_flag": float(collapsed is not None), "collapse_verdict_window": float(held),
                "window_said_wrong_share": said_wrong, "window_attempt_wrong_share": attempt_wrong}

    def state_dict(self) -> dict[str, Any]:
        return {"window": [list(item) for item in self.window]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window.clear()
        for verdict, truth in state["window"]:
            self.window.append((str(verdict), bool(truth)))


# --- baselines of verify and revise contexts ---

def baseline_group(role: str, context_correct: bool, split_by_truth: bool) -> str:
    """Name of the baseline group of a verify or revise context.

    context_correct: truth of the attempt the verify turn checks / the revise turn revises.
    """
    if role not in ("verify", "revise"):
        raise ValueError(f"baseline groups exist for 'verify' and 'revise' contexts, not {role!r}")
    if not split_by_truth:
        return role
    truth = "correct" if context_correct else "wrong"
    return f"{role}|after_{truth}" if role == "revise" else f"{role}|checked_{truth}"


class TurnBaselines:
    """Learned baselines of verify and revise contexts, and the collapse guard's window.

    Each baseline group (see `baseline_group`) predicts the expected outcome of its contexts:
    the verify reward (verdict matches the truth) or the revision's correctness, both in
    [0, 1]. Until a group has observed `turn_baseline_warmup` outcomes its prediction is the
    mean of its buffered outcomes (PRIOR_OUTCOME = 0.5 before the first one); from then on
    a `ValueHead(hidden_size, cfg.value_head_hidden_size)` on the policy's hidden state at the
    final prompt token, started at the running mean (its output bias) and refitted after every
    batch on the buffer (AdamW at cfg.value_learning_rate). The buffered hidden states come from the policy as it was when
    each batch was sampled; the buffer keeps the last `turn_baseline_buffer_size` per group.

    state_dict/load_state_dict carry the heads, which heads are in use, the counts, the
    buffered outcomes and the collapse window; the buffered hidden states are not saved
    (they would dominate a checkpoint), so after a resume the running mean is exact and
    the heads refit on the batches that follow.
    """

    def __init__(self, cfg: A_PO_Config, hidden_size: int, correction_cfg: CorrectionTrainingConfig | None = None):
        self.cfg = cfg
        self.settings = correction_cfg if correction_cfg is not None else CorrectionTrainingConfig()
        self.hidden_size = hidden_size
        truths = (True, False) if self.settings.turn_baseline_split_by_truth else (True,)
        self.groups = [baseline_group(role, truth, self.settings.turn_baseline_split_by_truth)
                       for role in ("verify", "revise") for truth in truths]
        size = self.settings.turn_baseline_buffer_size
        self.heads = {group: ValueHead(hidden_size, cfg.value_head_hidden_size).eval() for group in self.groups}
        self.head_in_use = {group: False for group in self.groups}
        self.seen = {group: 0 for group in self.groups}
        self.outcomes: dict[str, deque[float]] = {group: deque(maxlen=size) for group in self.groups}
        self.features: dict[str, deque[Tensor]] = {group: deque(maxlen=size) for group in self.groups}
        self.fits = 0
        self.collapse_guard = VerdictCollapseGuard(self.settings.collapse_window, self.settings.collapse_min_verdicts,
                                                   cfg.collapse_threshold)

    @property
    def needs_features(self) -> bool:
        """Whether predictions and updates take hidden states (False for 'running_mean')."""
        return self.settings.turn_baseline == "value_head"

    def source(self, group: str) -> Literal["value_head", "running_mean", "prior"]:
        """Where `group`'s next prediction comes from."""
        self._check_group(group)
        if self.head_in_use[group]:
            return "value_head"
        return "running_mean" if self.outcomes[group] else "prior"

    def predict(self, groups: Sequence[str], features: Tensor | None) -> list[float]:
        """Expected outcome in [0, 1] of each context; features (N, H) float, or None with 'running_mean'."""
        self._check_inputs(groups, features)
        predictions = [0.0] * len(groups)
        for group in set(groups):
            rows = [i for i, g in enumerate(groups) if g == group]
            source = self.source(group)
            if source == "value_head":
                with torch.no_grad():
                    values = self.heads[group](features[rows]).float().cpu().tolist()  # type: ignore[index]
            else:
                mean = sum(self.outcomes[group]) / len(self.outcomes[group]) if source == "running_mean" else PRIOR_OUTCOME
                values = [mean] * len(rows)
            for row, value in zip(rows, values):
                predictions[row] = float(value)
        return predictions

    def observe(self, groups: Sequence[str], features: Tensor | None, outcomes: Sequence[float]) -> dict[str, float]:
        """Add observed outcomes (in [0, 1]) of a batch, then refit every warmed-up head.

        Returns {"turn_baseline_fit_loss/<group>": last-epoch MSE} for each head refitted.
        """
        self._check_inputs(groups, features)
        if len(outcomes) != len(groups):
            raise ValueError(f"observe: {len(outcomes)} outcomes for {len(groups)} contexts")
        for row, (group, outcome) in enumerate(zip(groups, outcomes)):
            if not 0.0 <= outcome <= 1.0:
                raise ValueError(f"observe: outcome {outcome} of group {group!r} is outside [0, 1]")
            self.outcomes[group].append(float(outcome))
            if features is not None:
                self.features[group].append(features[row].detach().float().cpu())
            self.seen[group] += 1
        losses = {}
        if self.needs_features:
            for group in sorted(set(groups)):
                if self.seen[group] >= self.settings.turn_baseline_warmup:
                    losses[f"turn_baseline_fit_loss/{group}"] = self._refit(group)
        return losses

    def _refit(self, group: str) -> float:
        buffered = len(self.features[group])
        features = torch.stack(list(self.features[group]))
        targets = torch.tensor(list(self.outcomes[group])[-buffered:], dtype=torch.float32)
        if not self.head_in_use[group]:
            _start_at_mean(self.heads[group], sum(self.outcomes[group]) / len(self.outcomes[group]))
        epoch_losses = fit_value_head(
            self.heads[group], features, targets, lr=self.cfg.value_learning_rate,
            epochs=self.settings.turn_baseline_epochs, batch_size=self.settings.turn_baseline_batch_size,
            seed=self.cfg.seed + self.fits)
        self.fits += 1
        self.head_in_use[group] = True
        return epoch_losses[-1]

    def _check_group(self, group: str) -> None:
        if group not in self.heads:
            raise ValueError(f"unknown baseline group {group!r}; this TurnBaselines has {self.groups}")

    def _check_inputs(self, groups: Sequence[str], features: Tensor | None) -> None:
        for group in set(groups):
            self._check_group(group)
        if self.needs_features:
            if features is None or features.shape != (len(groups), self.hidden_size):
                shape = None if features is None else tuple(features.shape)
                raise ValueError(f"turn_baseline='value_head' needs features of shape ({len(groups)}, "
                                 f"{self.hidden_size}), got {shape}")

    def state_dict(self) -> dict[str, Any]:
        """Everything but the buffered hidden states (see the class docstring); torch.save-able."""
        return {
            "groups": list(self.groups), "hidden_size": self.hidden_size,
            "heads": {group: head.state_dict() for group, head in self.heads.items()},
            "head_in_use": dict(self.head_in_use), "seen": dict(self.seen),
            "outcomes": {group: list(values) for group, values in self.outcomes.items()},
            "fits": self.fits, "collapse_guard": self.collapse_guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; raises ValueError when the groups or the hidden size differ."""
        if list(state["groups"]) != self.groups or int(state["hidden_size"]) != self.hidden_size:
            raise ValueError(f"TurnBaselines state has groups {state['groups']} and hidden size {state['hidden_size']}, "
                             f"this one {self.groups} and {self.hidden_size}: turn_baseline_split_by_truth or the "
                             "model differs from the checkpoint's")
        for group in self.groups:
            self.heads[group].load_state_dict(state["heads"][group])
            self.head_in_use[group] = bool(state["head_in_use"][group])
            self.seen[group] = int(state["seen"][group])
            self.outcomes[group].clear()
            self.outcomes[group].extend(float(v) for v in state["outcomes"][group])
            self.features[group].clear()
        self.fits = int(state["fits"])
        self.collapse_guard.load_state_dict(state["collapse_guard"])


@torch.no_grad()
def _start_at_mean(head: ValueHead, mean: float) -> None:
    """Set the output bias so that the head first predicts the group's running mean (its last
    layer starts at zero, so it would predict 0.5): the hand-over from mean to head is smooth and
    the online fit only has to learn how contexts differ from the mean."""
    clipped = min(max(mean, 0.01), 0.99)
    head.net[-1].bias.fill_(math.log(clipped / (1.0 - clipped)))


@torch.no_grad()
def context_features(policy, prompts: Sequence[Sequence[int]], pad_token_id: int, batch_size: int) -> Tensor:
    """(N, H) float32 CPU hidden states of `policy` at each prompt's final token (no gradient).

    The policy is put in eval mode for the pass and restored to its previous mode.
    """
    was_training = policy.training
    policy.eval()
    try:
        chunks = []
        for start in range(0, len(prompts), batch_size):
            prompt_ids, prompt_mask = left_pad(prompts[start:start + batch_size], pad_token_id)
            chunks.append(prompt_hidden_states(policy, prompt_ids, prompt_mask).float().cpu())
    finally:
        policy.train(was_training)
    return torch.cat(chunks)


# --- rewards ---

@dataclass
class TurnReward:
    """What one turn is trained on.

    reward: the turn's reward (module docstring); outcome: the part a baseline predicts, in
    [0, 1] (the attempt's or revision's correctness, or whether the verdict matched the truth);
    context_correct: truth of the attempt in the context (checked by a verify turn, revised by a
    revise turn), None for first attempts.
    """

    role: str
    reward: float
    outcome: float
    context_correct: bool | None


def turn_rewards(episode: Episode, correct: Sequence[bool], alpha: float,
                 verify_reward: Literal["match", "outcome"] = "match") -> list[TurnReward]:
    """Per-turn rewards of one episode, aligned with `episode.turns`.

    correct: correctness of each attempt/revise turn in order (`episode.attempts`), with a
    truncated one already False. verify_reward: "match" (PAG) rewards a parsed verdict that
    agrees with the truth of the attempt it checked; "outcome" rewards a parsed verdict with the
    correctness of the answer that stands after it: the checked attempt after "correct", the
    revision after "wrong" (the checked attempt when no revision follows, as after a verified
    last attempt, where the verdict changes nothing). An unparsed or truncated verdict earns 0
    under both. Raises ValueError when the episode is malformed (a verify turn of an attempt
    not yet made, a revision that does not follow its attempt) or verify_reward is unknown.
    """
    if verify_reward not in ("match", "outcome"):
        raise ValueError(f"verify_reward={verify_reward!r} is not one of 'match', 'outcome'")
    attempts = episode.attempts
    if len(correct) != len(attempts):
        raise ValueError(f"{len(correct)} correctness values for {len(attempts)} attempt/revise turns")
    by_index = {turn.attempt_index: bool(c) for turn, c in zip(attempts, correct)}
    if sorted(by_index) != list(range(len(attempts))) or episode.turns[0].role != "attempt":
        raise ValueError(f"episode attempts have indices {[t.attempt_index for t in attempts]} and start with "
                         f"{episode.turns[0].role!r}; expected an 'attempt' then revisions numbered 0, 1, ...")
    rewards = []
    for turn in episode.turns:
        if turn.role == "attempt":
            value = float(by_index[turn.attempt_index])
            rewards.append(TurnReward("attempt", value, value, None))
        elif turn.role == "revise":
            before, after = by_index[turn.attempt_index - 1], by_index[turn.attempt_index]
            rewards.append(TurnReward("revise", float(after) + alpha * (float(after) - float(before)),
                                      float(after), before))
        elif turn.role == "verify":
            if turn.attempt_index not in by_index:
                raise ValueError(f"a verify turn checks attempt {turn.attempt_index}, which the episode does not have")
            truth = by_index[turn.attempt_index]
            if verify_reward == "match":
                value = float(verdict_matches(said_verdict(turn), truth))
            else:
                value = float(_standing_correct(turn, by_index))
            rewards.append(TurnReward("verify", value, value, truth))
        else:
            raise ValueError(f"unknown turn role {turn.role!r}; expected one of {TURN_ROLES}")
    return rewards


def said_verdict(turn: Turn) -> str | None:
    """The verdict a verify turn counts as saying: its parsed verdict when the turn finished,
    None when it was truncated or unparsed (such a verdict earns 0 under either reward)."""
    if turn.truncated or not turn.verdict_parsed:
        return None
    return turn.verdict


def verdict_matches(verdict: str | None, truth: bool) -> bool:
    """PAG's verifier reward ("match"): a said verdict that agrees with the truth of the checked attempt."""
    return verdict is not None and (verdict == "correct") == truth


def _standing_correct(turn: Turn, by_index: dict[int, bool]) -> bool:
    """verify_reward "outcome": correctness of the answer that stands after a parsed, finished
    verdict (False for an unparsed or truncated one)."""
    verdict = said_verdict(turn)
    if verdict is None:
        return False
    if verdict == "wrong" and turn.attempt_index + 1 in by_index:
        return by_index[turn.attempt_index + 1]
    return by_index[turn.attempt_index]


def grade_attempts(episodes: Sequence[Episode], golds: Sequence[str], cfg: A_PO_Config,
                   report: GradingReport | None = None) -> list[list[bool]]:
    """Correctness of every attempt/revise turn, per episode in `episode.attempts` order.

    Truncated turns are False without grading (A*-PO's reward 0); the rest go through one
    `apo.strict_grading.rewards_by_rule` call (cfg.reward_rule), counted in `report`.
    """
    pending = [(e, a) for e, episode in enumerate(episodes) for a, turn in enumerate(episode.attempts)
               if not turn.truncated]
    verdicts = rewards_by_rule([episodes[e].attempts[a].text for e, a in pending], [golds[e] for e, _ in pending],
                               [False] * len(pending), cfg, report)
    correct = [[False] * len(episode.attempts) for episode in episodes]
    for (e, a), verdict in zip(pending, verdicts):
        correct[e][a] = bool(verdict)
    return correct


# --- samples, baselines and metrics of one batch of episodes ---

def correction_samples(
    episodes: Sequence[Episode],
    golds: Sequence[str],
    v_star: Sequence[float],
    turn_baselines: TurnBaselines,
    policy,
    tokenizer,
    cfg: A_PO_Config,
    report: GradingReport | None = None,
    *,
    problem_rows: Sequence[dict] | None = None,
) -> tuple[list[PolicySample], dict[str, float]]:
    """One `PolicySample` per generated turn of `episodes`, and the batch's training metrics.

    golds[i], v_star[i]: gold answer and stage-1 V* of episodes[i] (V* is the first attempt's
    baseline). problem_rows[i] ({"id", "type", "level"}) labels the metric records; without it
    episodes are numbered. Samples follow episode order, then turn order; each carries the
    turn's full context as prompt_ids and only its generated tokens as response_ids.

    Steps: 1. grade attempts and revisions; 2. rewards per turn (`turn_rewards`);
    3. baselines: V* for attempts, `turn_baselines.predict` for verify/revise contexts
    (turned into the expected reward); 4. `turn_baselines.observe` with this batch's
    outcomes (after step 3, so no sample sets its own baseline); 5. metrics.

    Metrics (floats; a rate whose denominator is empty in this batch, such as the recall on
    correct attempts when none was correct, is left out rather than reported as 0): acc_t1, acc_final,
    delta_i_to_c, delta_c_to_i, verifier_accuracy, verifier_recall_on_correct,
    verifier_recall_on_wrong, revision_rate, verdict_parse_failure_rate, said_wrong_rate
    (all as defined by apo.metrics.summarize), the collapse guard's collapse_flag and
    window shares, reward/<role> and baseline/<role> means, num_samples/<role>,
    baseline_source/<group> (2 = value head, 1 = running mean, 0 = prior) and the heads'
    fit losses. Raises ValueError when the inputs are not aligned or V* is not finite.
    """
    _check_aligned(episodes, golds, v_star, problem_rows)
    alpha = cfg.revision_bonus_alpha
    split = turn_baselines.settings.turn_baseline_split_by_truth

    # 1-2. grade, then reward every turn
    correct = grade_attempts(episodes, golds, cfg, report)
    rewards = [turn_rewards(episode, c, alpha, cfg.verify_reward) for episode, c in zip(episodes, correct)]

    # 3. baselines: V* for first attempts, the turn baselines for verify/revise contexts
    later = [(e, t) for e, episode in enumerate(episodes) for t, turn in enumerate(episode.turns)
             if turn.role != "attempt"]
    groups = [baseline_group(rewards[e][t].role, bool(rewards[e][t].context_correct), split) for e, t in later]
    features = None
    if turn_baselines.needs_features and later:
        features = context_features(policy, [episodes[e].turns[t].prompt_ids for e, t in later],
                                    tokenizer.pad_token_id, turn_baselines.settings.turn_feature_batch_size)
    sources = {group: turn_baselines.source(group) for group in set(groups)}
    predicted = turn_baselines.predict(groups, features) if later else []
    baselines: dict[tuple[int, int], float] = {}
    for (e, t), value in zip(later, predicted):
        reward = rewards[e][t]
        if reward.role == "revise":
            value = (1.0 + alpha) * value - alpha * float(bool(reward.context_correct))
        baselines[(e, t)] = value

    samples = []
    for e, episode in enumerate(episodes):
        for t, turn in enumerate(episode.turns):
            baseline = float(v_star[e]) if turn.role == "attempt" else baselines[(e, t)]
            samples.append(_policy_sample(turn, rewards[e][t], baseline, where=f"episode {e} turn {t}"))

    # 4. update the turn baselines with this batch's outcomes
    fit_losses = turn_baselines.observe(groups, features, [rewards[e][t].outcome for e, t in later]) if later else {}

    # 5. metrics
    metrics = training_metrics(episodes, correct, cfg.correction_mode, golds, problem_rows)
    verify_turns = [(e, t) for e, t in later if episodes[e].turns[t].role == "verify"]
    metrics.update(turn_baselines.collapse_guard.update(
        [episodes[e].turns[t].verdict if episodes[e].turns[t].verdict_parsed else None for e, t in verify_turns],
        [bool(rewards[e][t].context_correct) for e, t in verify_turns]))
    metrics.update(_reward_summary(samples))
    metrics.update({f"baseline_source/{group}": {"value_head": 2.0, "running_mean": 1.0, "prior": 0.0}[source]
                    for group, source in sorted(sources.items())})
    metrics.update(fit_losses)
    return samples, {name: float(value) for name, value in metrics.items() if value is not None}


def _check_aligned(episodes, golds, v_star, problem_rows) -> None:
    lengths = {"episodes": len(episodes), "golds": len(golds), "v_star": len(v_star)}
    if problem_rows is not None:
        lengths["problem_rows"] = len(problem_rows)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"correction_samples needs one gold, one V* (and one problem row) per episode, got {lengths}")
    bad = [i for i, value in enumerate(v_star) if value is None or not math.isfinite(float(value))]
    if bad:
        raise ValueError(f"v_star is missing or not finite for episodes {bad[:10]} ({len(bad)} in all); give every "
                         "first attempt a stage-1 V* or a value-head estimate")


def _policy_sample(turn: Turn, reward: TurnReward, baseline: float, where: str) -> PolicySample:
    if not turn.prompt_ids or not turn.response_ids:
        raise ValueError(f"{where} ({turn.role}) has an empty prompt or response; nothing to train on")
    return PolicySample(prompt_ids=list(turn.prompt_ids), response_ids=list(turn.response_ids),
                        reward=float(reward.reward), baseline=float(baseline), role=turn.role,
                        truncated=bool(turn.truncated), context_correct=reward.context_correct)


def training_metrics(episodes: Sequence[Episode], correct: Sequence[Sequence[bool]], mode: str,
                     golds: Sequence[str], problem_rows: Sequence[dict] | None = None) -> dict[str, float | None]:
    """Self-correction metrics of one training batch through apo.metrics.summarize (the same
    definitions as evaluation): Acc@t1, Acc@final, the transitions, the verifier's accuracy and
    recalls and the verdict parse-failure rate over first verifications (PAG's definition; the
    accuracy and parse failures over every verify turn as *_all_turns), revision rate, flattened
    to scalar entries."""
    records = []
    seen: dict[str, int] = {}  # a step can hold one problem several times (more prompts per step than problems)
    for e, (episode, episode_correct) in enumerate(zip(episodes, correct)):
        row = dict(problem_rows[e]) if problem_rows is not None else {"id": f"batch-{e}", "type": "unknown",
                                                                       "level": None}
        row["answer"] = golds[e]
        row.setdefault("type", "unknown")
        row.setdefault("level", None)
        sample = seen.get(row["id"], 0)
        seen[row["id"]] = sample + 1
        records += episode_records(episode, problem_row=row, sample=sample, correctness=list(episode_correct), mode=mode,
                                   extracted_answers=[extract_answer(turn.text) for turn in episode.attempts])
    summary = summarize(records)
    verifier, every = summary["verifier"], summary["verifier_all_turns"]
    return {
        "acc_t1": summary["acc_t1"], "acc_final": summary["acc_final"],
        "delta_i_to_c": summary["delta_i_to_c"], "delta_c_to_i": summary["delta_c_to_i"],
        "verifier_accuracy": verifier["accuracy"], "verifier_recall_on_correct": verifier["recall_on_correct"],
        "verifier_recall_on_wrong": verifier["recall_on_wrong"], "revision_rate": summary["revision_rate"],
        "verdict_parse_failure_rate": verifier["parse_failure_rate"], "said_wrong_rate": verifier["said_wrong_rate"],
        "verifier_accuracy_all_turns": every["accuracy"],
        "verdict_parse_failure_rate_all_turns": every["parse_failure_rate"],
        "num_verifications": float(verifier["num_verifications"]), "mean_turns": summary["mean_turns"],
        "truncation_rate": summary["truncation_rate"],
    }


def _reward_summary(samples: Sequence[PolicySample]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for role in TURN_ROLES:
        chosen = [s for s in samples if s.role == role]
        summary[f"num_samples/{role}"] = float(len(chosen))
        if chosen:
            summary[f"reward/{role}"] = sum(s.reward for s in chosen) / len(chosen)
            summary[f"baseline/{role}"] = sum(s.baseline for s in chosen) / len(chosen)
    return summary


def counterfactual_verdict_samples(samples: Sequence[PolicySample], verdicts: Sequence[str | None], tokenizer,
                                   ) -> list[PolicySample]:
    """`samples` with, after each verify sample, the verdicts it did not say (`counterfactual_verdicts`).

    verdicts[i]: `said_verdict` of samples[i]'s turn for a verify sample ("correct", "wrong" or
    None when unparsed or truncated), ignored for the other roles. Each added sample has the verify
    sample's context (prompt_ids), baseline and context_correct; its response is PAG's sentence
    VERDICT_SENTENCES[v] followed by the tokenizer's EOS, and its reward the "match" reward,
    1 when v agrees with the truth of the checked attempt. A parsed verdict adds the other one,
    an unparsed verdict both. Under "match" a verdict's reward depends on nothing but the truth,
    so this is the all-action update of a two-action choice (Allen et al., 2017, "Mean
    Actor-Critic", arXiv 1709.00503) with exact rewards: in every context the verifier learns
    the value of both verdicts, however rarely it samples one. Raises ValueError when a verify
    sample has no context_correct or the lists are not aligned."""
    if len(verdicts) != len(samples):
        raise ValueError(f"{len(verdicts)} verdicts for {len(samples)} samples")
    sentences = {v: list(tokenizer.encode(text, add_special_tokens=False)) + [tokenizer.eos_token_id]
                 for v, text in VERDICT_SENTENCES.items()}
    out = []
    for i, (sample, said) in enumerate(zip(samples, verdicts)):
        out.append(sample)
        if sample.role != "verify":
            continue
        if sample.context_correct is None:
            raise ValueError(f"verify sample {i} has no context_correct; its counterfactual verdict's reward needs "
                             "the truth of the attempt it checked")
        for verdict, response_ids in sentences.items():
            if verdict != said:
                out.append(dataclasses.replace(sample, response_ids=list(response_ids), truncated=False,
                                               reward=float(verdict_matches(verdict, sample.context_correct))))
    return out


def balanced_verify_subset(samples: Sequence[PolicySample]) -> list[int]:
    """Indices of the samples to train on when verify turns are balanced by truth
    (`balance_verify_truth`): every attempt and revise sample, and as many verify samples of
    right attempts as of wrong ones, min(n_right, n_wrong) of each class, the first in sample
    order (episodes come in the step's shuffled prompt order). Under the "match" reward with
    per-class baselines, a verdict that ignores the attempt then has zero expected advantage
    whatever the attempts' accuracy, so only what tells the classes apart is pushed; without
    balancing, the verdict of the majority class is (docs/self_correction.md). A batch with
    one class only trains no verify turn. Raises ValueError for a verify sample without its
    attempt's truth (context_correct None)."""
    unlabeled = [i for i, s in enumerate(samples) if s.role == "verify" and s.context_correct is None]
    if unlabeled:
        raise ValueError(f"verify samples {unlabeled[:10]} have no context_correct; balancing needs the truth of "
                         "the attempt each one checked (correction_samples sets it)")
    by_class = {truth: [i for i, s in enumerate(samples) if s.role == "verify" and s.context_correct is truth]
                for truth in (True, False)}
    quota = min(len(by_class[True]), len(by_class[False]))
    kept = set(by_class[True][:quota]) | set(by_class[False][:quota])
    return [i for i, s in enumerate(samples) if s.role != "verify" or i in kept]


# --- advantages ---

def role_normalized_advantages(samples: Sequence[PolicySample], *, center: bool = False, eps: float = 1e-6,
                               reduce_sum: Callable[[Tensor], Tensor] | None = None) -> list[float]:
    """Advantages r - b scaled separately per advantage group, aligned with `samples`.

    Groups (ADVANTAGE_GROUPS): "solution" = attempt and revise tokens, "verification" =
    verify tokens (PAG normalises attempt and verify tokens apart; a revision is a solution).
    Within a group, A_i = (r_i - b_i) / s with s = sqrt(mean_j (r_j - b_j)^2), the root mean
    square, so each group's advantages have unit RMS and the baselines keep centring them.
    With center=True the group's mean is subtracted first (PPO-style whitening, s is then the
    standard deviation). A group whose s is below `eps` (every advantage equal to its centre)
    keeps its values unscaled, which are all ~0. One sample counts once, whatever its length
    (PAG whitens per token: docs/REPRODUCING.md).

    `reduce_sum` makes the statistics those of the whole batch over all processes: it sums a
    float64 tensor over them (e.g. accelerator.reduce(t, reduction="sum")); every process must
    call this function together, with or without samples of a group. None = this process's
    samples only. Raises ValueError for an unknown role.
    """
    raw = [s.reward - s.baseline for s in samples]
    unknown = sorted({s.role for s in samples} - set(ADVANTAGE_GROUPS))
    if unknown:
        raise ValueError(f"samples with roles {unknown}; role_normalized_advantages knows {sorted(ADVANTAGE_GROUPS)}")
    groups = sorted(set(ADVANTAGE_GROUPS.values()))  # the same order on every process
    rows = {group: [i for i, s in enumerate(samples) if ADVANTAGE_GROUPS[s.role] == group] for group in groups}

    def summed(local: list[list[float]]) -> Tensor:  # (groups, k), summed over processes when asked
        stats = torch.tensor(local, dtype=torch.float64)
        return reduce_sum(stats).double().cpu() if reduce_sum is not None else stats

    # 1. the centre of each group: its mean (center) or 0
    centre = {group: 0.0 for group in groups}
    if center:
        counts_sums = summed([[len(rows[g]), sum(raw[i] for i in rows[g])] for g in groups])
        centre = {g: float(total / count) if count > 0 else 0.0 for g, (count, total) in zip(groups, counts_sums)}
    # 2. the scale: root mean square around that centre
    counts_squares = summed([[len(rows[g]), sum((raw[i] - centre[g]) ** 2 for i in rows[g])] for g in groups])
    advantages = list(raw)
    for group, (count, squares) in zip(groups, counts_squares):
        if not rows[group]:
            continue
        scale = math.sqrt(float(squares / count))
        for i in rows[group]:
            value = raw[i] - centre[group]
            advantages[i] = value / scale if scale >= eps else value
    return advantages
