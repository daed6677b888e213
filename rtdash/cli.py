"""``python -m rtdash``: ``check`` the providers with the current settings; ``backfill`` the history store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .config import Settings, SettingsError
from .logs import setup_logging
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


def backfill(settings: Settings, *, days: float, every: str, kinds: Sequence[str]) -> int:
    """Fill the store with ``days`` of simulated rows every ``every``; a progress bar on stderr.  0 on success."""
    import pandas as pd

    from .store import StoreError, open_store
    from .store.backfill import ProgressBar
    from .store.backfill import backfill as fill

    try:
        step = pd.Timedelta(every)
        if step <= pd.Timedelta(0):
            raise ValueError(every)
    except ValueError:
        print(f"rtdash: error: --every {every!r} is invalid: expected a positive duration such as 1s", file=sys.stderr)
        return 2
    try:
        store = open_store(settings)
    except StoreError as exc:
        print(f"rtdash: error: {exc}", file=sys.stderr)
        return 1
    if store is None:
        print("rtdash: error: RTDASH_STORE is none: set it to a file path or a postgresql:// URL", file=sys.stderr)
        return 2
    with store:
        print(f"backfilling {store!r}: {days:g} days every {every} of {', '.join(kinds)}", file=sys.stderr)
        result = fill(store, settings, days=days, every=step, kinds=tuple(kinds), progress=ProgressBar())
    for kind, (rows, new) in result.items():
        print(f"{kind}: {rows:,} rows, {new:,} new")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtdash", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="fetch once from each configured provider and print what came back")
    fill = commands.add_parser(
        "backfill",
        help="fill the history store with simulated rows (demos, benchmarks); reruns add no duplicates",
        description="Fill the history store (RTDASH_STORE / --store) with simulated rows. Times are aligned to "
        "--every and values depend on the time only, so a rerun adds only the times that are new.",
        allow_abbrev=False,
    )
    fill.add_argument("--source", choices=["simulated"], default="simulated", help="where rows come from")
    fill.add_argument("--days", type=float, default=30.0, help="how far back, in days (30)")
    fill.add_argument("--every", default="1s", help="time between rows, pandas-style: 500ms, 1s, 1min (1s)")
    fill.add_argument(
        "--kinds", default="price,weather", help="price, weather or both, comma-separated (price,weather)"
    )
    commands.add_parser(
        "collect",
        help="poll the providers and write to the PostgreSQL store only (viewers follow it: RTDASH_ROLE=viewer)",
    )
    args, rest = parser.parse_known_args(argv)
    settings = load_settings_or_exit(rest)
    setup_logging(settings, level=logging.WARNING if args.command == "check" else logging.INFO)
    if args.command == "check":
        return check(settings)
    if args.command == "collect":
        from .scaleout import collect

        return collect(settings)
    if args.command == "backfill":
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        if not kinds or set(kinds) - {"price", "weather"}:
            parser.error(f"--kinds {args.kinds!r} is invalid: expected price, weather or price,weather")
        return backfill(settings, days=args.days, every=args.every, kinds=kinds)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
