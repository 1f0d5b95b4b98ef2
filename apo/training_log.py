"""What a train_math_apo.py run records: metrics.jsonl, an optional tracker, the step line, the plot.

Every field of a metrics.jsonl record is defined in docs/METRICS.md.
"""

from __future__ import annotations

import os

from apo.records import append_jsonl, read_metrics_lines, write_jsonl_atomic


class MetricsLogger:
    """metrics.jsonl (one JSON object per record, flushed at once) plus an optional tracker.

    report_to: "none", "tensorboard" (needs the tensorboard package) or "wandb" (needs wandb);
    the tracker is imported only when chosen, and a missing package raises ImportError with
    the install command. `resume_step` drops records after that step from an existing file
    (apo.records.read_metrics_lines: a torn last line is dropped with a warning, a bad line
    elsewhere raises InputError naming it), so a resumed run does not repeat steps. Only the
    main process should create one.
    """

    def __init__(self, output_dir: str, report_to: str = "none", resume_step: int | None = None,
                 run_config: dict | None = None):
        if report_to not in ("none", "tensorboard", "wandb"):
            raise ValueError(f"report_to={report_to!r} is not one of none, tensorboard, wandb")
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        kept = [] if resume_step is None else [r for r in read_metrics_lines(self.path) if r["step"] <= resume_step]
        write_jsonl_atomic(self.path, kept)
        self.report_to = report_to
        self._tracker = _open_tracker(report_to, output_dir, run_config or {})

    def log(self, record: dict) -> None:
        """Append `record` (must hold "step"); numeric values also go to the tracker."""
        append_jsonl(self.path, [record])
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.report_to == "tensorboard":
            for key, value in numbers.items():
                self._tracker.add_scalar(key, value, record["step"])
            self._tracker.flush()
        elif self.report_to == "wandb":
            self._tracker.log(numbers, step=record["step"])

    def close(self) -> None:
        if self.report_to == "tensorboard":
            self._tracker.close()
        elif self.report_to == "wandb":
            self._tracker.finish()


def _open_tracker(report_to: str, output_dir: str, run_config: dict):
    if report_to == "none":
        return None
    try:
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=os.path.join(output_dir, "tensorboard"))
        import wandb

        return wandb.init(project="apo-math", dir=output_dir, config=run_config)
    except ImportError as err:
        raise ImportError(f"--report_to {report_to} needs the {report_to} package: pip install {report_to} "
                          f"(or use --report_to none); {err}") from None


def format_step_line(step: int, total: int, record: dict, accuracy: float | None) -> str:
    """The fixed-format progress line, e.g.
    `step 12/100 | loss 0.0431 | reward 0.412 | v* 0.38 | acc 0.30 | 812 ms/step`."""
    acc = "-" if accuracy is None else f"{accuracy:.2f}"
    loss = record.get("loss")
    loss_text = "nan" if loss is None else f"{loss:.4f}"
    return (f"step {step}/{total} | loss {loss_text} | reward {record['reward_mean']:.3f} | "
            f"v* {record['v_star_mean']:.2f} | acc {acc} | {1000 * record['seconds_per_step']:.0f} ms/step")


def plot_training_curves(metrics_path: str, png_path: str) -> str:
    """PNG of the stage-2 mean reward and the held-out greedy accuracy against step.

    Reads the "reward_mean" records and the "eval_accuracy" records of `metrics_path`.
    Returns `png_path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics_lines(metrics_path)
    train = [(r["step"], r["reward_mean"]) for r in records if "reward_mean" in r]
    evals = [(r["step"], r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="train reward (mean, one sample per prompt)", alpha=0.7)
    if evals:
        axis.plot(*zip(*evals), marker="o", label="held-out greedy accuracy")
    axis.set_xlabel("step")
    axis.set_ylabel("reward / accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    axis.set_title("A*-PO stage 2")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return png_path
