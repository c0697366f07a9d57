"""Issue an API token for a user and print it once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.tokens import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it. Only its hash is stored, so this is "
        "the one time it can be read; use it as 'Authorization: Bearer <token>'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token acts as")
        parser.add_argument(
            "--name", default="", help="a label to tell the user's tokens apart (optional)"
        )

    def handle(self, *args, username: str, name: str, **options) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive; activate it first")
        _token, raw_token = api_token_create(user=user, name=name)
        self.stdout.write(raw_token)
