"""``python -m rtdash``: ``check`` the providers with the current settings (more commands join it)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .config import Settings, SettingsError
from .sources import Source, SourceError, redact

log = logging.getLogger("rtdash")


def load_settings_or_exit(argv: Sequence[str] = ()) -> Settings:
    """Settings, or one line on stderr naming the bad setting and exit status 2: no traceback for a user's mistake."""
    try:
        return Settings.load(argv=argv)
    except SettingsError as exc:
        print(f"rtdash: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check(settings: Settings) -> int:
    """Fetch once from each configured provider; print its rows or its error.  0 only when all answered in full."""
    ok = True
    for kind in ("price", "weather"):
        chosen = settings.price_source if kind == "price" else settings.weather_source
        provider = settings.price_provider if kind == "price" else settings.weather_provider
        source = Source.lookup(kind, provider)(settings=settings)
        print(f"{kind}: {source.label}" + (" (auto)" if chosen == "auto" else ""))
        try:
            df = source.fetch()
        except SourceError as exc:
            print(f"  error: {redact(str(exc), settings.secrets)}")
            ok = False
            continue
        finally:
            source.close()
        print("  " + df.drop(columns="source").to_string(index=False).replace("\n", "\n  "))
        for name, message in (df.attrs.get("errors") or {}).items():
            print(f"  error for {name}: {redact(message, settings.secrets)}")
            ok = False
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtdash", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="fetch once from each configured provider and print what came back")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings_or_exit(rest)
    if args.command == "check":
        return check(settings)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
