"""The webhook queue's measurements in Prometheus: :class:`PrometheusQueueListener` is the
``infra.queue.QueueListener`` the worker hands its consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from observability import metrics

if TYPE_CHECKING:
    from domain.webhooks import QueueStats

__all__ = ["PrometheusQueueListener"]


# Job outcomes -> the bounded ``queue_jobs_total{outcome}`` values of observability.metrics.
_OUTCOME_LABELS: Final = {
    "completed": "completed",
    "failed": "failed",
    "retry": "retried",
    "error": "retried",
    "released": "retried",
}


class PrometheusQueueListener:
    """Feeds ``queue_depth``, ``queue_job_age_seconds``, ``queue_oldest_job_age_seconds``,
    ``queue_jobs_total``, ``queue_dead_letters_total``, ``queue_dead_letters_pending`` and
    ``worker_active_jobs``."""

    def job_started(self, age_s: float | None) -> None:
        """Count the job as active; observe its age at pick-up."""
        metrics.WORKER_ACTIVE_JOBS.inc()
        if age_s is not None:
            metrics.QUEUE_JOB_AGE.observe(age_s)

    def job_finished(self, outcome: str, duration_s: float) -> None:
        """Count the outcome (skipped runs did no work and are not counted)."""
        metrics.WORKER_ACTIVE_JOBS.dec()
        label = _OUTCOME_LABELS.get(outcome)
        if label is not None:
            metrics.QUEUE_JOBS.labels(label).inc()

    def dead_lettered(self) -> None:
        """Count a dead letter."""
        metrics.QUEUE_DEAD_LETTERS.inc()

    def sampled(self, stats: QueueStats) -> None:
        """Publish the depth by status and the oldest waiting event's age (0 when none)."""
        for status, count in stats.counts.items():
            metrics.QUEUE_DEPTH.labels(status).set(count)
        metrics.QUEUE_OLDEST_JOB_AGE.set(stats.oldest_open_age_s or 0.0)
        if stats.dead_letters is not None:
            metrics.QUEUE_DEAD_LETTERS_PENDING.set(stats.dead_letters)
