from django.apps import AppConfig


class KosukeConfig(AppConfig):
    """The project itself, as an app: its system checks."""

    name = "kosuke"
    verbose_name = "Kosuke"

    def ready(self) -> None:
        from kosuke import checks  # noqa: F401 - registers them
