"""The one list of self-correction modes: the config field's type, `apo.episodes.run_episodes`, the
metrics and the records use it (a module of its own, so that apo.config imports it without a cycle).

  * `self_verify`: the model verifies its own attempt and revises after a "wrong" verdict (PAG);
  * `none`: the first attempt only;
  * `oracle`: a retry wherever the gold answer says the attempt is wrong: an upper bound, not
    self-correction.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["CORRECTION_MODES", "CorrectionMode"]

CorrectionMode = Literal["self_verify", "oracle", "none"]
CORRECTION_MODES: tuple[str, ...] = get_args(CorrectionMode)
