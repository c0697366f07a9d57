from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("previews", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="preview",
            name="start_detail",
            field=models.CharField(blank=True, max_length=255),
        ),
    ]
