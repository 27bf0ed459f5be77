"""Languages of the console: Chinese (zh-CN, the default) and English, from Babel message
catalogues (``translations/<locale>/LC_MESSAGES/messages.po``).

Message ids are the English text; the zh_CN catalogue translates every one of them
(``tests/unit/test_console.py`` checks), and English falls back to the id. The ``.po`` files
are read when the console starts — there is no compiled ``.mo`` to build or to go stale.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

TRANSLATIONS = Path(__file__).parent / "translations"
# The language a session names → the catalogue's locale folder (None: the message ids themselves).
LOCALES: dict[str, str | None] = {"zh-CN": "zh_CN", "en": None}


def N_(message: str) -> str:  # gettext's name: mark for translation, translate later
    """Marks a message kept in Python for extraction; templates translate it with ``_()``."""
    return message


def catalogue(locale: str) -> Translations:
    """The compiled catalogue of one locale, in memory."""
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as po:
        messages = read_po(po, locale=locale)
    compiled = BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return Translations(compiled)


def translations() -> dict[str, NullTranslations]:
    """Every language's translations, by the name a session uses."""
    return {language: catalogue(locale) if locale else NullTranslations() for language, locale in LOCALES.items()}
