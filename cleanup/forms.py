"""The dashboard's controls: what each asks for before it changes something."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from chat.models import IDLE_TIMEOUT_MAX_MINUTES

REASON_HELP = "Why: recorded with who did it."


def _reason(*, required: bool = True) -> forms.CharField:
    return forms.CharField(max_length=500, required=required, strip=True, help_text=REASON_HELP)


class ReasonForm(forms.Form):
    """Resume, cancel a run's pending stops, retry its failed ones."""

    reason = _reason()


class SweepForm(forms.Form):
    dry_run = forms.BooleanField(required=False, help_text="Decide and record, stop nothing.")
    threshold_minutes = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(IDLE_TIMEOUT_MAX_MINUTES)],
        help_text="Empty: the configured threshold.",
    )
    batch_size = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Stops handed out at most; empty: the configured batch size.",
    )
    reason = _reason(required=False)

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("dry_run") and not data.get("reason"):
            raise ValidationError("Say why: a sweep that is not a dry run stops previews.")
        return data


class PauseForm(forms.Form):
    reason = _reason()
    minutes = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)],
        help_text="Resume by itself after this many minutes; empty: until resumed.",
    )


class PreviewForm(forms.Form):
    """Stop or open one session's preview."""

    session = forms.CharField(max_length=129, help_text="PROJECT/SESSION")
    owner = forms.CharField(
        max_length=150, required=False, help_text="Username, when several users have these ids."
    )
    action = forms.ChoiceField(choices=[("stop", "Stop"), ("open", "Open")])
    reason = _reason()
