"""The run's data counts: records refused up front, and samples trained, dropped and truncated,
summed over DataLoader workers and ranks and kept across a resume.

Batches carry their own tally (llavakit.data.tally); `LlavaTrainer` hands each consumed batch's
tally to `SampleTallyCallback`, which stores the ranks' total in every checkpoint's
trainer_state.json (transformers' `ExportableState`), so a resumed run starts from the counts of
the steps it does not repeat.
"""

from __future__ import annotations

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from llavakit.data.dataset import LoadReport
from llavakit.data.tally import EXAMPLES_KEPT, SampleTally, gather_tally


class SampleTallyCallback(TrainerCallback, ExportableState):
    """Sums the tallies of the batches this process trains on; see the module docstring."""

    def __init__(self) -> None:
        self.tally = SampleTally()
        """This process's batches since it started."""
        self.before = SampleTally()
        """All ranks' counts up to the checkpoint this run resumed from."""
        self.counts: dict = {}
        """All ranks' counts at the last save (what `state()` writes into the checkpoint)."""

    def count(self, batch_tally: SampleTally | None) -> None:
        if batch_tally is not None:
            self.tally.add(batch_tally)

    def total(self) -> SampleTally:
        """Every rank's counts since the run began (collective: every rank calls it together)."""
        return SampleTally().add(self.before).add(gather_tally(self.tally))

    def state(self) -> dict:
        return {"args": {}, "attributes": {"counts": self.counts}}

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed state holds its checkpoint's counts; a fresh one, this object's empty ones.
        name = type(self).__name__
        stored = state.stateful_callbacks.get(name)
        attributes = stored.get("attributes", {}) if isinstance(stored, dict) else {}
        self.before = SampleTally.from_dict(attributes.get("counts") or {})
        state.stateful_callbacks.setdefault(name, self.state())

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:  # the checkpoint written next holds the counts up to here
            self.counts = self.total().to_dict()

    on_epoch_end = on_step_end


def data_metadata(report: LoadReport, counts: SampleTally) -> dict:
    """Checkpoint metadata: exact counts, and the first few reasons of each kind."""
    return {
        "skipped_records": report.skipped_records,
        "trained_samples": counts.samples,
        "failed_samples": counts.failed,
        "truncated_samples": counts.truncated,
        "data_problems": {
            "skipped": [str(problem) for problem in report.skipped[:EXAMPLES_KEPT]],
            "failed": counts.failure_examples,
            "truncated": counts.truncation_examples,
        },
    }


def describe_data(report: LoadReport, counts: SampleTally) -> str:
    """The log lines of `data_metadata`."""
    lines = [
        f"data: {report.skipped_records} record(s) skipped up front, {counts.samples} samples "
        f"trained, {counts.failed} failed to load (dropped), {counts.truncated} truncated at "
        "max_length"
    ]
    for kind, examples in data_metadata(report, counts)["data_problems"].items():
        lines += [f"  {kind}: {example}" for example in examples]
    return "\n".join(lines)
