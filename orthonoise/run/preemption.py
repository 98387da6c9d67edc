"""Preemption and time-outs: checkpoint at the next step boundary, then let the launcher requeue the job.

SLURM (through submitit) signals a job `signal_delay_s` before its time limit and when it is preempted: USR2,
or $SUBMITIT_PREEMPT_SIGNAL. submitit's own handler would checkpoint and requeue right away, in the middle of a
step, with our state half-updated. So while training, the signal only raises a flag; at the end of the step
every rank agrees to stop, rank 0 writes the checkpoint, and then submitit's handler runs: it calls the
launcher's `checkpoint()` (hydra-submitit-launcher resubmits the same job) and requeues it. The requeued job
finds its checkpoint in the run directory and resumes. Outside submitit (plain process, torchrun) the same
signal (USR2, e.g. from `sbatch --signal=USR2@120`) checkpoints and ends the run as "interrupted"; launching
it again resumes it.

SIGTERM (what `kill`, `scancel` and SLURM's preemption send first) and Ctrl-C (SIGINT) do the same everywhere:
the run checkpoints at the end of its step and exits cleanly, with nothing requeued; a second Ctrl-C aborts at
once. They stop the process, not just the run: a multirun on the basic launcher runs its jobs one after another
in one process, and the jobs after a stopped one are recorded as interrupted without being started.
"""
import os
import signal
import sys
import threading

import torch

from orthonoise import distributed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stopped_by: signal.Signals | None = None  # outlives the run that received it


def watched_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def stopped_by() -> str | None:
    """The stop signal this process received during an earlier run, if any: no further run may start."""
    return _stopped_by.name if _stopped_by else None


class Preemption:
    """While open (a `with` block), the stop signals only raise a flag that the training loop reads."""

    def __init__(self):
        self.signum, self.previous, self.installed = None, {}, False
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self.previous = {sig: signal.signal(sig, self._note) for sig in {watched_signal(), *STOP_SIGNALS}}
            self.installed = True

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on a crash: a later run in this process must find the usual handlers

    def _note(self, signum, frame) -> None:
        global _stopped_by
        if signum == signal.SIGINT:
            if self.signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: abort now; the last periodic checkpoint stays
            print("\nCtrl-C: stopping at the end of this step, with a checkpoint (Ctrl-C again aborts now)",
                  file=sys.stderr, flush=True)
        if signum in STOP_SIGNALS:
            _stopped_by = signal.Signals(signum)
        self.signum = signum

    def requested(self, device: torch.device) -> bool:
        """Whether any rank was signalled: all ranks must stop at the same step (a collective call)."""
        flag = torch.tensor(float(self.signum is not None), device=device)
        return distributed.all_reduce_mean(flag).item() > 0

    def close(self) -> None:
        """Put back the handlers this displaced."""
        if self.installed:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
            self.installed = False

    def hand_over(self) -> None:
        """After the checkpoint: run the handler we displaced for the preemption signal (submitit's
        requeue-and-exit), if there was one. SIGTERM is not handed over: its default would kill us now."""
        self.close()
        previous = self.previous.get(watched_signal())
        if callable(previous) and self.signum == watched_signal():
            previous(self.signum, None)
