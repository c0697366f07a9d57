"""Run numbers are counted from the decisions: the hand-kept counters go. Deferred stops
become a count on their run instead of a row each; previews that could not be decided
become their own number; a failed stop's error stays in its decision only."""

from django.db import migrations, models

FORWARD = """
UPDATE cleanup_cleanuprun AS run SET
    deferred = (SELECT count(*) FROM cleanup_stopdecision d
                WHERE d.run_id = run.id AND d.outcome = 'deferred'),
    undecided = GREATEST(0, run.failed - (SELECT count(*) FROM cleanup_stopdecision d
                WHERE d.run_id = run.id AND d.outcome = 'failed')),
    errors = COALESCE((SELECT jsonb_agg(e) FROM jsonb_array_elements(run.errors) AS e
                       WHERE NOT e ? 'container' AND NOT EXISTS (
                           SELECT 1 FROM cleanup_stopdecision d
                           WHERE d.run_id = run.id AND d.outcome = 'failed'
                             AND d.project_id || '/' || d.session_id = e->>'session')
                       ), '[]'::jsonb);
DELETE FROM cleanup_stopdecision WHERE outcome = 'deferred';
"""


class Migration(migrations.Migration):
    dependencies = [("cleanup", "0001_initial"), ("chat", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="cleanuprun", name="deferred", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="cleanuprun", name="undecided", field=models.PositiveIntegerField(default=0)
        ),
        migrations.RunSQL(FORWARD, reverse_sql=migrations.RunSQL.noop),
        migrations.RenameField(model_name="cleanuprun", old_name="errors", new_name="sweep_errors"),
        migrations.RemoveField(model_name="cleanuprun", name="finished_at"),
        migrations.RemoveField(model_name="cleanuprun", name="found"),
        migrations.RemoveField(model_name="cleanuprun", name="stopped"),
        migrations.RemoveField(model_name="cleanuprun", name="skipped"),
        migrations.RemoveField(model_name="cleanuprun", name="failed"),
        migrations.AlterField(
            model_name="cleanuprun",
            name="trigger",
            field=models.CharField(
                choices=[("beat", "Beat"), ("command", "Command")], max_length=16
            ),
        ),
        migrations.AddField(
            model_name="stopdecision",
            name="containers",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name="stopdecision",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("stopped", "Stopped"),
                    ("skipped", "Skipped"),
                    ("failed", "Failed"),
                    ("dry_run", "Dry Run"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="stopdecision",
            index=models.Index(
                condition=models.Q(("outcome", "pending")),
                fields=["decided_at"],
                include=["chat_session"],
                name="stop_decision_pending",
            ),
        ),
    ]
