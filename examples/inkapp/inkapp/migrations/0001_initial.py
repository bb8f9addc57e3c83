from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="Visit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("version", models.CharField(max_length=64)),
                ("note", models.CharField(blank=True, max_length=200)),
            ],
            options={"ordering": ["-id"]},
        ),
    ]
