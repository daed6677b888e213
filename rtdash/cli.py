"""``python -m rtdash``: ``check`` the providers with the current settings; ``backfill`` the history store;
``collect`` into PostgreSQL.  Every error is one line on stderr that says what to do, never a traceback."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from .config import Settings, SettingsError
from .logs import setup_logging
from .sources import Source, SourceError, redact

log = logging.getLogger("rtdash")

DESCRIPTION = (
    "Check the providers with the current settings (check), fill the history store with simulated rows or the "
    "providers' own history (backfill), "
    "or poll the providers into PostgreSQL only (collect). Settings come from RTDASH_* variables, .env, or "
    "--setting value after the command, e.g. rtdash check --price-interval 5s."
)
MAX_DAYS = 36500.0  # as far back as RTDASH_RETENTION reaches


class Parser(argparse.ArgumentParser):
    """argparse that states a usage error in one line, with where to read more, instead of the usage and a line."""

    def error(self, message: str):
        print(f"rtdash: error: {message}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def days(text: str) -> float:
    """``--days``: a number of days above 0 and at most MAX_DAYS, or refused with a message naming it."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_DAYS:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: expected a number of days above 0 and at most {MAX_DAYS:g}, such as 30"
        )
    return value


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
    if settings.rules:  # read and checked with the settings: a bad rules file stopped before the fetches
        print(f"alerts: {len(settings.rules)} rules from {settings.alerts}")
        for rule in settings.rules:
            hook = ", webhook" if rule.webhook else ""
            what = rule.describe() if rule.condition == "stale" else f"{rule.target} {rule.describe()}"
            print(f"  {rule.name}: {what} ({rule.severity}{hook})")
    return 0 if ok else 1


def backfill(settings: Settings, *, days: float, every: str, kinds: Sequence[str]) -> int:
    """Fill the store with ``days`` of simulated rows every ``every``; a progress bar on stderr.  0 on success."""
    import pandas as pd

    from .store import StoreError
    from .store.backfill import ProgressBar
    from .store.backfill import backfill as fill

    try:
        step = pd.Timedelta(every)
        if step <= pd.Timedelta(0):
            raise ValueError(every)
    except ValueError:
        print(f"rtdash: error: --every {every!r} is invalid: expected a positive duration such as 1s", file=sys.stderr)
        return 2
    store = _open_store(settings)
    if isinstance(store, int):
        return store
    bar, drawn = ProgressBar(), []

    def progress(done: int, total: int) -> None:
        drawn.append(True)
        bar(done, total)

    with store:
        print(f"backfilling {store!r}: {days:g} days every {every} of {', '.join(kinds)}", file=sys.stderr)
        try:
            result = fill(store, settings, days=days, every=step, kinds=tuple(kinds), progress=progress)
        except StoreError as exc:  # PostgreSQL down or gone mid-way: what was written stays, a rerun adds the rest
            message = f"{exc}; check that the store is up and reachable, then rerun: it adds only the rows missing"
            print(("\n" if drawn else "") + f"rtdash: error: {message}", file=sys.stderr)  # a new line after the bar
            return 1
    for kind, (rows, new) in result.items():
        print(f"{kind}: {rows:,} rows, {new:,} new")
    return 0


def backfill_provider(settings: Settings, *, days: float, kinds: Sequence[str]) -> int:
    """Fill the store with ``days`` of the providers' own history (rtdash.stream.history), page by page within
    RTDASH_HISTORY_BUDGET calls an hour, a progress bar on stderr; pages already stored are skipped, so a rerun
    resumes.  0 when nothing is missing, 1 when something is (said on stderr: rerun later)."""
    import pandas as pd

    from .store import StoreError

    store = _open_store(settings)
    if isinstance(store, int):
        return store
    missing = False
    now = pd.Timestamp.now(tz="UTC")
    with store:
        for kind in kinds:
            try:
                result, label, new = _fill_from_provider(store, settings, kind, now - pd.Timedelta(days=days), now)
            except StoreError as exc:
                message = f"{exc}; rerun when the store is up: it adds only the rows missing"
                print(f"\nrtdash: error: {message}", file=sys.stderr)
                return 1
            print(f"{kind}: {result.rows:,} rows from {label} in {result.requests:,} requests, {new:,} new")
            for gap in result.missing:
                missing = True
                when = f"{gap.start:%Y-%m-%d %H:%M} to {gap.end:%Y-%m-%d %H:%M} UTC"
                reason = redact(gap.reason, settings.secrets)
                print(f"  missing {', '.join(gap.names)} {when}: {reason}", file=sys.stderr)
    if missing:
        print("rtdash: some ranges are missing: rerun later to resume (stored pages are skipped)", file=sys.stderr)
    return 1 if missing else 0


def _open_store(settings: Settings):
    """The history store, or the exit code after a one-line error: 1 when it cannot be opened, 2 when it is off."""
    from .store import StoreError, open_store

    try:
        store = open_store(settings)
    except StoreError as exc:
        print(f"rtdash: error: {exc}", file=sys.stderr)
        return 1
    if store is None:
        print("rtdash: error: RTDASH_STORE is none: set it to a file path or a postgresql:// URL", file=sys.stderr)
        return 2
    return store


def _fill_from_provider(store, settings: Settings, kind: str, start, end):
    """One kind's provider history from ``start`` to ``end`` into ``store``: the fill's result, the provider, and
    how many rows were new."""
    from .sources import make_source
    from .sources.base import history_source
    from .store.backfill import ProgressBar
    from .stream.history import Budget, fill

    source = make_source(kind, settings).history_provider
    label = history_source(source.source_type, source.resolution) if source.resolution else None
    new = 0

    def stored(names: list[str], a, b) -> bool:
        """A page is done when the store holds nine in ten of the rows it can have (a resumed run)."""
        rows = store.read(kind, a, b, names, columns=["source"])
        expected = (b - a).total_seconds() / source.resolution * len(names)
        return expected > 0 and int((rows["source"] == label).sum()) >= 0.9 * expected

    def write(df) -> None:
        nonlocal new
        new += store.write(kind, df)

    print(f"backfilling {store!r}: {kind} from {source.label}", file=sys.stderr)
    try:
        result = fill(
            source,
            {name: (start, end) for name in source.series},
            budget=Budget(settings.history_budget),
            on_rows=write,
            backoff_max=settings.backoff_max,
            skip=stored if label else None,
            progress=ProgressBar(unit="pages"),
            now=end,
        )
    finally:
        source.close()
    return result, source.label, new


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="rtdash", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="fetch once from each configured provider and print what came back")
    fill = commands.add_parser(
        "backfill",
        help="fill the history store with simulated rows (demos, benchmarks); reruns add no duplicates",
        description="Fill the history store (RTDASH_STORE / --store) with simulated rows. Times are aligned to "
        "--every and values depend on the time only, so a rerun adds only the times that are new.",
        allow_abbrev=False,
    )
    fill.add_argument(
        "--source",
        choices=["simulated", "provider"],
        default="simulated",
        help="where rows come from: simulated, or the configured providers' own history (within "
        "RTDASH_HISTORY_BUDGET calls an hour; a rerun resumes) (simulated)",
    )
    fill.add_argument("--days", type=days, default=30.0, help=f"how far back, in days, at most {MAX_DAYS:g} (30)")
    fill.add_argument("--every", default="1s", help="time between rows, pandas-style: 500ms, 1s, 1min (1s)")
    fill.add_argument(
        "--kinds", default="price,weather", help="price, weather or both, comma-separated (price,weather)"
    )
    fill.add_argument(
        "--store",
        metavar="PATH_OR_URL",
        help="the history store: a DuckDB file path or a postgresql:// URL (default: RTDASH_STORE)",
    )
    commands.add_parser(
        "collect",
        help="poll the providers and write to the PostgreSQL store only (viewers follow it: RTDASH_ROLE=viewer)",
    )
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "store", None) is not None:
        rest = [*rest, "--store", args.store]  # a setting like any other: checked where settings are
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
            fill.error(f"--kinds {args.kinds!r} is invalid: expected price, weather or price,weather")
        if args.source == "provider":
            return backfill_provider(settings, days=args.days, kinds=kinds)
        return backfill(settings, days=args.days, every=args.every, kinds=kinds)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
