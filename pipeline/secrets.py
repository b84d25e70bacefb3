"""Keep the run's credentials out of every text it writes, whatever a server echoes back.

What is hidden, for each secret (the API key, the base URL's password, its `user:password`
pair and that pair as an HTTP Basic token):

- the secret itself, wherever it occurs (a secret shorter than 8 characters, such as a
  placeholder key `x` or `EMPTY`, only where it stands as a whole word, so that ordinary
  text is not mangled);
- a masked echo such as OpenAI's `sk-abc***wxyz`, whose visible ends are the key's ends;
- a run of 12 or more key characters taken from inside the secret, such as the head of a
  key cut off by a server's or our own truncation of a long error message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
SHORT = 8  # below this a secret is redacted only as a whole word
FRAGMENT = 12  # the shortest piece of a secret that is hidden on its own
_MASKED = re.compile(r"[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*")
_RUN = re.compile(rf"[A-Za-z0-9_\-]{{{FRAGMENT},}}")


def url_credentials(url: str | None) -> tuple[str, str] | None:
    """The (user, password) written into a URL, or None when it carries none."""
    if not url or "@" not in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def credential_secrets(api_key: str | None, base_url: str | None) -> list[str]:
    """Every form in which the key and the URL's credentials could show up in a text."""
    found = [api_key or ""]
    if creds := url_credentials(base_url):
        user, password = creds
        pair = f"{user}:{password}"
        found += [password, pair, base64.b64encode(pair.encode()).decode()]
    return [s for s in dict.fromkeys(found) if s]


class Redactor:
    """Replace known secrets in texts and in JSON-like data; with no secrets it changes nothing."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        long = [s for s in self.secrets if len(s) >= SHORT]
        short = [s for s in self.secrets if len(s) < SHORT]
        alternatives = [re.escape(s) for s in long]
        alternatives += [rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])" for s in short]
        self._exact = re.compile("|".join(alternatives)) if alternatives else None
        self._long = long

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def long_only(self) -> Redactor:
        """A redactor for the summaries themselves: a short placeholder key such as `none` or
        `ollama` is a word too, and a model's text is not rewritten for it."""
        return Redactor(s for s in self.secrets if len(s) >= SHORT)

    def text(self, value: str) -> str:
        """`value` with every known secret, masked echo and long fragment of one replaced."""
        if self._exact is None or not value:
            return value
        value = self._exact.sub(MASK, value)
        if not self._long:
            return value
        if "***" in value:
            value = _MASKED.sub(self._unmask, value)
        return _RUN.sub(self._fragment, value)

    def data(self, value: Any) -> Any:
        """A copy of `value` (dicts, lists, tuples, strings) with every string redacted."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value

    def _unmask(self, match: re.Match[str]) -> str:
        token = match.group(0)
        head, _, tail = token.partition("*")
        tail = tail.lstrip("*")
        if len(head) + len(tail) < 4:
            return token
        for secret in self._long:
            if secret.startswith(head) and secret.endswith(tail):
                return MASK
        return token

    def _fragment(self, match: re.Match[str]) -> str:
        run = match.group(0)
        return MASK if any(run in secret for secret in self._long) else run
