"""System checks of the project's own.

Django's deploy checks look for its security, CSRF and clickjacking middleware by their
paths; this project runs subclasses of them (kosuke.middleware), so those three checks
are silenced in the settings and this one holds the same line.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register

REQUIRED_MIDDLEWARE = {
    "kosuke.middleware.SecurityMiddleware": "security.W001",
    "kosuke.middleware.XFrameOptionsMiddleware": "security.W002",
    "kosuke.middleware.CsrfViewMiddleware": "security.W003",
}


@register(Tags.security, deploy=True)
def middleware_in_place(app_configs, **kwargs) -> list[Warning]:
    return [
        Warning(
            f"{path} is not in MIDDLEWARE: Django's {django_check} protection is off",
            id="kosuke.W001",
        )
        for path, django_check in REQUIRED_MIDDLEWARE.items()
        if path not in settings.MIDDLEWARE
    ]
