"""Previews record their engine by name (PREVIEW_ENGINES), no longer by URL.

A URL that a configured engine has becomes that engine's name. Before engines had names
every preview was on the one engine at DOCKER_HOST, however its URL was spelled then: any
other URL becomes the name of the engine at DOCKER_HOST (or the default socket) if one is
configured, else of the first engine.
"""

from django.conf import settings
from django.db import migrations, models

from previews.engines import DEFAULT_SOCKET, engines


def _names_by_url() -> dict[str, str]:
    return {config.url: config.name for config in engines().values()}


def urls_to_names(apps, schema_editor):
    Preview = apps.get_model("previews", "Preview")
    names = _names_by_url()
    docker_host = settings.DOCKER_HOST or DEFAULT_SOCKET
    old_engine = names.get(docker_host) or next(iter(engines()))
    known = set(engines())
    for value in Preview.objects.exclude(engine="").values_list("engine", flat=True).distinct():
        if value not in known:
            Preview.objects.filter(engine=value).update(engine=names.get(value, old_engine))


def names_to_urls(apps, schema_editor):
    Preview = apps.get_model("previews", "Preview")
    for url, name in _names_by_url().items():
        Preview.objects.filter(engine=name).update(engine=url)


class Migration(migrations.Migration):
    dependencies = [("previews", "0004_retention")]

    operations = [
        migrations.AlterField(
            model_name="preview",
            name="engine",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.RunPython(urls_to_names, names_to_urls),
    ]
