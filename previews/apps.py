from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class PreviewsConfig(AppConfig):
    name = "previews"
    verbose_name = "Previews"

    def ready(self) -> None:
        from chat.heartbeat_cache import stop_inputs_changed
        from previews.models import Preview

        # Heartbeats read the preview's state and start from Redis (chat.heartbeat_cache);
        # state changes by UPDATE say so where they happen (Preview.transition, reconcile).
        def preview_written(instance: Preview, **_: object) -> None:
            stop_inputs_changed([instance.session_id])

        post_save.connect(preview_written, sender=Preview, weak=False)
        post_delete.connect(preview_written, sender=Preview, weak=False)
