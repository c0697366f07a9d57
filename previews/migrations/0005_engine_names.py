"""Previews record their engine by name (PREVIEW_ENGINES), no longer by URL.

A URL that a configured engine has becomes that engine's name; with a single engine
configured (every deployment before engines had names), any other URL becomes its name
too. Anything else is left as it was, and shows as an engine not in PREVIEW_ENGINES.
"""

from django.conf import settings
from django.db import migrations, models


def _names_by_url() -> dict[str, str]:
    return {config.url: config.name for config in settings.PREVIEW_ENGINE_LIST}


def urls_to_names(apps, schema_editor):
    Preview = apps.get_model("previews", "Preview")
    names = _names_by_url()
    only = settings.PREVIEW_ENGINE_LIST[0].name if len(settings.PREVIEW_ENGINE_LIST) == 1 else None
    known = {config.name for config in settings.PREVIEW_ENGINE_LIST}
    for value in Preview.objects.exclude(engine="").values_list("engine", flat=True).distinct():
        name = names.get(value) or (only if value not in known else None)
        if name and name != value:
            Preview.objects.filter(engine=value).update(engine=name)


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
