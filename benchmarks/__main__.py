"""`python -m benchmarks`: every figure of quality.md's benchmark list, peers alongside.

One run = one fresh PostgreSQL cluster (embedded PostgreSQL 18 unless --bindir says otherwise),
dftui engine subprocesses, DBOS Transact in its own process, pgbench. The table is printed and,
for a full run, written to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks import dftui_suite as suite
from benchmarks import peers, profile, tui_bench
from benchmarks.harness import BenchEnv, BenchError, EngineProcess, bench_env, machine, rss_mib
from benchmarks.options import PHASES, Options
from benchmarks.report import Figure, Results, print_table, write_results
from benchmarks.ui import Ui

DEFAULT_RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# Issue 17's targets, each checked by the run that measures it (ratios within one run).
DRAIN_VS_LIMIT = 0.25  # one-step drain, × pgbench's 8-client commit rate
THREE_VS_DBOS = 10  # 3-step workflows, × DBOS @step
JOIN_VS_DRAIN = 0.8  # JOIN branch steps/s, × the one-step drain's steps/s
SCALING_VS_ONE = 0.95  # 2 and 4 engine processes, × one process
STARTS_VS_LIMIT = 0.3  # df.start, 8 sessions, × pgbench's 8-client rate
FIRST_STARTS_SLOWDOWN = 1.5  # the first batch on a fresh database, × the later batch's time
LATENCY_P50_COMMITS = 8  # one-step start → done p50, × one commit at 1 client
LATENCY_P99_COMMITS = 25
# Issue 13: the drain's and 3-step's ratios to DBOS stay within 10 % of the run before the
# security work (issue 17's measurement: 5.35× and 8.5×).
BEFORE_SECURITY_DRAIN = 5.35
BEFORE_SECURITY_THREE = 8.5
SECURITY_KEEP = 0.9


def parse_args(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark dftui against DBOS Transact and PostgreSQL's commit limit.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny numbers: checks that every phase runs (figures mean little)")
    parser.add_argument("-n", "--instances", type=int, help="one-step instances to drain (10000)")
    parser.add_argument("--three", type=int, help="3-step workflows (1000)")
    parser.add_argument("--join", type=int, help="10-branch JOIN instances (200)")
    parser.add_argument("--latency-samples", type=int, help="sequential one-step starts (200)")
    parser.add_argument("--concurrency", type=int, help="workers per engine process (8)")
    parser.add_argument("--scale-n", type=int, help="instances per scaling run (10000)")
    parser.add_argument("--idle-pending", type=int, help="pending instances in the idle phase (100000)")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU measurement window (10)")
    parser.add_argument("--tui-rows", help="comma-separated instance counts for the TUI phase "
                        "(100000,1000000)")
    parser.add_argument("--pgbench-seconds", type=float, help="duration of each pgbench run (10)")
    parser.add_argument("--only", metavar="PHASES",
                        help=f"comma-separated phases to run ({', '.join(PHASES)}); pgbench always "
                        "runs. A partial run writes no RESULTS.md unless --results is given")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS Transact peer")
    parser.add_argument("--no-tui", action="store_true", help="skip the TUI phase")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy profile of the engine during the main drain, written to DIR")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help=f"write the Markdown results here (a full run defaults to {DEFAULT_RESULTS.name})")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--bindir", type=Path, help="PostgreSQL bin/ directory (default: embedded 18)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = parser.parse_args(argv)

    opts = Options.quick_run() if args.quick else Options()
    for attr, flag in (("n", "instances"), ("three_n", "three"), ("join_n", "join"),
                       ("latency_samples", "latency_samples"), ("concurrency", "concurrency"),
                       ("scale_n", "scale_n"), ("idle_pending", "idle_pending"),
                       ("idle_seconds", "idle_seconds"), ("pgbench_seconds", "pgbench_seconds")):
        value = getattr(args, flag)
        if value is not None:
            if value <= 0:
                parser.error(f"--{flag.replace('_', '-')} must be positive")
            setattr(opts, attr, value)
    if args.tui_rows:
        try:
            opts.tui_rows = tuple(int(v) for v in args.tui_rows.split(",") if v.strip())
        except ValueError:
            parser.error("--tui-rows takes comma-separated integers, e.g. 100000,1000000")
    if args.only:
        picked = frozenset(p.strip() for p in args.only.split(",") if p.strip())
        unknown = sorted(picked - set(PHASES))
        if unknown or not picked:
            parser.error(f"--only: unknown phase(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(PHASES)}")
        opts.only = picked
    opts.dbos = not args.no_dbos
    opts.tui = not args.no_tui
    opts.profile_dir = args.profile
    if args.bindir and not (args.bindir / "postgres").exists():
        parser.error(f"--bindir: no postgres binary in {args.bindir}")
    return opts, args


def run(opts: Options, env: BenchEnv, ui: Ui, results: Results) -> list[str]:
    """All phases in order; returns extra Markdown (the profile summary) for RESULTS.md."""
    extra: list[str] = []
    k = opts.concurrency

    # -- the physical limit first, on a quiet server ----------------------------------------
    limits = {}
    for clients in (1, 2, 8):
        with ui.bar(f"pgbench: single-row INSERT commits, {clients} client(s)", None):
            limits[clients] = peers.pgbench(env, clients, opts.pgbench_seconds)
    limit_k = limits[8].tps if k >= 8 else limits[2].tps
    want = opts.wants

    # -- df.start first, on the fresh database --------------------------------------------------
    starts = suite.start_rate(env, ui, opts) if want("starts") else None

    # -- dftui throughput -------------------------------------------------------------------
    if opts.profile_dir is not None and not profile.available():
        results.notes.append("py-spy is not installed: no profile (pip install '.[bench]')")
        opts.profile_dir = None
    main_drain = suite.drain(env, ui, opts, label="drain", what="drain", count=opts.n,
                             workflow_sql=suite.one_step_sql()) if want("drain") else None
    profiled: suite.DrainOutcome | None = None
    if opts.profile_dir is not None:
        profiled = suite.drain(env, ui, opts, label="profiled", what="profiled drain (py-spy)",
                               count=min(opts.n, 3000), workflow_sql=suite.one_step_sql(),
                               profile_dir=opts.profile_dir)
    three = suite.drain(env, ui, opts, label="three", what="3-step", count=opts.three_n,
                        workflow_sql=suite.three_step_sql()) if want("three") else None
    join = suite.drain(env, ui, opts, label="join", what=f"JOIN of {opts.join_branches}",
                       count=opts.join_n, workflow_sql=suite.join_sql(opts.join_branches)) \
        if want("join") else None

    # -- latency on an idle engine ------------------------------------------------------------
    lat = join_lat = None
    rss_idle_empty = float("nan")
    if want("latency"):
        env.vacuum()
        with EngineProcess(env, k, "latency") as engine:
            lat = suite.latency(env, ui, opts, label="lat", what="latency: one-step start → done",
                                expr=suite.one_step_sql(), samples=opts.latency_samples,
                                engine=engine)
            join_lat = suite.latency(env, ui, opts, label="joinlat",
                                     what=f"latency: JOIN of {opts.join_branches} start → done",
                                     expr=suite.join_sql(opts.join_branches),
                                     samples=opts.join_latency_samples, engine=engine)
            time.sleep(1.0)
            rss_idle_empty = rss_mib(engine.pid)

    # -- scaling -----------------------------------------------------------------------------
    scaling: dict[int, suite.DrainOutcome] = {}
    for processes in opts.scaling if want("scaling") else ():
        if processes == 1 and opts.scale_n == opts.n and main_drain is not None:
            scaling[1] = main_drain
            continue
        scaling[processes] = suite.drain(
            env, ui, opts, label=f"scale{processes}", what=f"scaling ×{processes}",
            count=opts.scale_n, processes=processes, workflow_sql=suite.one_step_sql())

    # -- DBOS ----------------------------------------------------------------------------------
    dbos: dict = {}
    if opts.dbos and want("dbos") and not peers.dbos_installed():
        results.notes.append("DBOS Transact is not installed: no DBOS column (pip install '.[bench]')")
    elif opts.dbos and want("dbos"):
        with ui.bar("DBOS Transact: one-step, 3-step (steps / transactions), latency, idle", None):
            dbos = peers.run_dbos(env, one=min(opts.n, 2000), three=opts.three_n,
                                  latency=opts.latency_samples, concurrency=k,
                                  idle_seconds=opts.idle_seconds, timeout=opts.timeout)
        results.notes.append(f"DBOS Transact {dbos.get('dbos_version')}: workflows called in-process "
                             f"from {k} threads; steps are the same UPDATE on a psycopg pool of {k}.")

    # -- idle cost with many pending instances ---------------------------------------------------
    idle = suite.idle_cost(env, ui, opts) if want("idle") else None

    # -- TUI -------------------------------------------------------------------------------------
    tui: list[tui_bench.TuiResult] = []
    if opts.tui and want("tui"):
        why = tui_bench.tui_available()
        if why:
            results.notes.append(f"TUI phase skipped: {why}")
        else:
            for target in opts.tui_rows:
                rows = tui_bench.seed(env, ui, target)
                with ui.bar(f"tui: first paint and paging with {rows:,} instances", None):
                    tui.append(tui_bench.measure(env, opts.tui_pages, rows))

    # -- the table -------------------------------------------------------------------------------
    if starts is not None:
        ok = starts.later_per_s >= STARTS_VS_LIMIT * limits[8].tps
        results.add(Figure(f"df.start, {starts.sessions} sessions, one per transaction", "starts/s",
                           starts.later_per_s, None, limits[8].tps, target=f"≥ {STARTS_VS_LIMIT}× limit",
                           target_ok=ok, note=f"{starts.count:,} starts after the first batch"))
        results.add(Figure(f"df.start: first {starts.count:,} on a fresh database", "starts/s",
                           starts.first_per_s, None, limits[8].tps,
                           target=f"time ≤ {FIRST_STARTS_SLOWDOWN}× later",
                           target_ok=starts.slowdown <= FIRST_STARTS_SLOWDOWN,
                           note=f"took {starts.slowdown:.2f}× as long as the later batch "
                           "(tables VACUUMed empty before it)"))
        results.add(Figure("PostgreSQL backend CPU per df.start", "ms",
                           starts.server_cpu_ms_per_start, higher_is_better=False,
                           note="the client sessions' backends"))
        results.add(Figure("WAL bytes per df.start (one-step workflow)", "B",
                           starts.wal_bytes_per_start, higher_is_better=False))
    if main_drain is not None:
        d = main_drain.stats
        results.add(Figure(f"drain {opts.n:,} one-step instances, 1 engine × {k}", "steps/s",
                           d.steps_per_s, dbos.get("one_step_wf_per_s"), limit_k,
                           target=f"≥ {DRAIN_VS_LIMIT}× limit",
                           target_ok=d.steps_per_s >= DRAIN_VS_LIMIT * limit_k))
        dbos1 = dbos.get("one_step_wf_per_s")
        if dbos1:
            results.add(Figure("drain ÷ DBOS, against the run before the security work", "×",
                               d.steps_per_s / dbos1, None, None,
                               target=f"≥ {SECURITY_KEEP:.0%} of {BEFORE_SECURITY_DRAIN}×",
                               target_ok=d.steps_per_s / dbos1 >= SECURITY_KEEP * BEFORE_SECURITY_DRAIN,
                               note="issue 13: within 10 % of the ratio measured before it"))
        results.add(Figure("server transactions per one-step instance (drain)", "",
                           main_drain.commits_per_step, higher_is_better=False,
                           note="pg_stat_database.xact_commit, read-only ones included"))
        results.add(Figure("engine CPU per one-step instance (drain)", "ms",
                           main_drain.engine_cpu_ms_per_step, higher_is_better=False,
                           note="Python + psycopg; engine metrics: process_cpu_seconds_total"))
        results.add(Figure("PostgreSQL backend CPU per one-step instance (drain)", "ms",
                           main_drain.server_cpu_ms_per_step, higher_is_better=False,
                           note="the engine's sessions"))
        results.add(Figure("WAL fsyncs per one-step instance (drain)", "", main_drain.fsyncs_per_step,
                           higher_is_better=False, note="group commit shares them"))
        results.add(Figure("WAL bytes per one-step instance (drain)", "B",
                           main_drain.wal_bytes_per_step, higher_is_better=False))
        m = main_drain.metrics
        results.add(Figure("claim round trip, mean (drain)", "ms", m.claim_ms,
                           higher_is_better=False,
                           note=f"engine metrics: {m.claims:,.0f} claims, empty ones included"))
        results.add(Figure("tasks per non-empty claim, mean (drain)", "", m.batch_mean,
                           note=f"engine metrics; {m.steps_requeued:,.0f} steps requeued"))
    if three is not None:
        dbos3 = dbos.get("three_step_wf_per_s")
        results.add(Figure(f"3-step workflows ({opts.three_n:,}), vs DBOS @step", "wf/s",
                           three.stats.instances_per_s, dbos3, limit_k / 3,
                           target=f"≥ {THREE_VS_DBOS}× DBOS",
                           target_ok=None if not dbos3 else three.stats.instances_per_s >= THREE_VS_DBOS * dbos3))
        if dbos3:
            results.add(Figure("3-step ÷ DBOS @step, against the run before the security work", "×",
                               three.stats.instances_per_s / dbos3, None, None,
                               target=f"≥ {SECURITY_KEEP:.0%} of {BEFORE_SECURITY_THREE}×",
                               target_ok=three.stats.instances_per_s / dbos3
                               >= SECURITY_KEEP * BEFORE_SECURITY_THREE,
                               note="issue 13: within 10 % of the ratio measured before it"))
        dbos3tx = dbos.get("three_tx_wf_per_s")
        results.add(Figure("3-step workflows, vs DBOS @transaction", "wf/s",
                           three.stats.instances_per_s, dbos3tx, limit_k / 3, target="≥ 5× DBOS",
                           target_ok=None if not dbos3tx else three.stats.instances_per_s >= 5 * dbos3tx))
        results.add(Figure("3-step: steps/s", "steps/s", three.stats.steps_per_s,
                           dbos3 * 3 if dbos3 else None, limit_k))
    if join is not None:
        results.add(Figure(f"JOIN of {opts.join_branches} ({opts.join_n:,} instances)", "inst/s",
                           join.stats.instances_per_s, None, limit_k / opts.join_branches))
        one_rate = main_drain.stats.steps_per_s if main_drain is not None else None
        results.add(Figure(f"JOIN of {opts.join_branches}: branch steps/s", "steps/s",
                           join.stats.steps_per_s, None, limit_k,
                           target=f"≥ {JOIN_VS_DRAIN}× one-step drain" if one_rate else "",
                           target_ok=None if not one_rate
                           else join.stats.steps_per_s >= JOIN_VS_DRAIN * one_rate,
                           note=f"{join.stats.steps_per_s / one_rate:.2f}× the one-step drain"
                           if one_rate else ""))
    if join_lat is not None:
        results.add(Figure(f"JOIN of {opts.join_branches}: start → done p50", "ms",
                           suite.Latency.pct(join_lat.client_ms, 50), None, None,
                           higher_is_better=False))
    dbos_lat = dbos.get("latency_ms") or []
    if lat is not None:
        commit_ms = limits[1].latency_ms  # one commit at 1 client: the latency limit
        for p, times in ((50, LATENCY_P50_COMMITS), (95, None), (99, LATENCY_P99_COMMITS)):
            value = suite.Latency.pct(lat.client_ms, p)
            results.add(Figure(f"one-step start → done p{p}, idle engine", "ms", value,
                               suite.Latency.pct(dbos_lat, p) if dbos_lat else None,
                               commit_ms, higher_is_better=False,
                               target=f"≤ {times}× one commit" if times else "",
                               target_ok=None if times is None else value <= times * commit_ms,
                               note=f"{value / commit_ms:.1f}× one commit ({commit_ms:.2f} ms)"))
        results.add(Figure("one-step p50, server clock (created_at → completed_at)", "ms",
                           suite.Latency.pct(lat.server_ms, 50), None, limits[1].latency_ms,
                           higher_is_better=False))
    one_process = scaling[1].stats.steps_per_s if 1 in scaling else None
    for processes, outcome in sorted(scaling.items()):
        rate = outcome.stats.steps_per_s
        judged = processes > 1 and one_process
        results.add(Figure(f"scaling: {processes} engine process{'es' if processes > 1 else ''} "
                           f"× {k}", "steps/s", rate, None, limits[8].tps,
                           target=f"≥ {SCALING_VS_ONE}× one process" if judged else "",
                           target_ok=rate >= SCALING_VS_ONE * one_process if judged else None,
                           note=f"{outcome.stats.steps:,} steps"
                           + (f"; {rate / one_process:.2f}× one process" if judged else "")))
    if idle is not None:
        results.add(Figure(f"idle engine CPU, {idle.pending:,} pending instances", "%",
                           idle.cpu_percent, dbos.get("idle_cpu_percent"), None,
                           higher_is_better=False, target="< 1 %", target_ok=idle.cpu_percent < 1))
    if lat is not None:
        results.add(Figure("engine RSS, idle with empty queue", "MiB", rss_idle_empty,
                           dbos.get("rss_mib"), None, higher_is_better=False))
    if idle is not None and lat is not None:
        growth = idle.rss_end_mib - rss_idle_empty
        results.add(Figure(f"engine RSS, idle with {idle.pending:,} pending", "MiB", idle.rss_end_mib,
                           None, None, higher_is_better=False,
                           target="growth ≤ 50 MiB", target_ok=growth <= 50,
                           note=f"{growth:+.0f} MiB vs empty"))
    if main_drain is not None:
        results.add(Figure(f"engine peak RSS while draining {opts.n:,}", "MiB",
                           main_drain.peak_rss_mib, None, None, higher_is_better=False))
    for t in tui:
        results.add(Figure(f"TUI first paint, {t.rows_in_table:,} instances", "ms",
                           t.first_paint_ms, None, None, higher_is_better=False))
        if t.page_ms:
            results.add(Figure(f"TUI next page of 100 (G), {t.rows_in_table:,} instances, p50",
                               "ms", suite.median(t.page_ms), None, None,
                               higher_is_better=False, note=f"{len(t.page_ms)} pages"))
        results.add(Figure(f"TUI PageDown, {t.rows_in_table:,} instances", "ms", t.pagedown_ms,
                           None, None, higher_is_better=False))

    results.notes.append(
        f"pgbench limit: {limits[1].tps:,.0f} commits/s at 1 client ({limits[1].latency_ms:.2f} ms "
        f"each), {limits[2].tps:,.0f} at 2, {limits[8].tps:,.0f} at 8. Throughput figures compare "
        f"with the {8 if k >= 8 else 2}-client rate (÷3 for 3-step workflows, ÷{opts.join_branches} "
        "for JOINs); latency with one commit at 1 client.")
    results.notes.append(
        "Latency is measured from the moment df.start's commit is acknowledged to the arrival of "
        "the engine's pg_notify('df_done') on a dedicated LISTEN connection.")
    if idle is not None:
        results.notes.append(
            f"Idle phase: {idle.pending:,} df.wait_for_signal('go') instances started with no engine "
        "running, their queued tasks deferred to 'infinity' (the state a signal wait parks in) so "
        f"the engine idles beside them; CPU over {idle.seconds:.0f} s from /proc/<pid>/stat.")
    if starts is not None and starts.profile:
        extra.append("\n## Where df.start's time goes (a profiled batch of the df.start phase)\n")
        extra.append("```\n" + "\n".join(starts.profile) + "\n```\n")
    if profiled is not None and profiled.profile_summary:
        extra.append(f"\n## Profile of a separate drain of {profiled.stats.instances:,} one-step "
                     f"instances ({profiled.stats.steps_per_s:.0f} steps/s while profiled)\n")
        extra.append("py-spy samples every engine thread, idle ones included; a worker blocked in "
                     "psycopg/libpq counts as a server round trip.\n")
        extra.append("```\n" + "\n".join(profiled.profile_summary) + "\n```\n")
        if profiled.profile_file is not None:
            results.notes.append(f"py-spy collapsed stacks: {profiled.profile_file}")
    return extra


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    argv = sys.argv[1:] if argv is None else argv
    opts, args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a file or pipe: wide enough for the table
    ui = Ui(Console(stderr=True))
    results = Results()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    host = machine()
    try:
        with bench_env(args.bindir, keep=args.keep) as env:
            pg_version = env.server_version()
            ui.say(f"[bold]dftui benchmarks[/bold] — PostgreSQL {pg_version}, {host['cores']} cores, "
                   f"{host['cpu']}, load {host['loadavg']}")
            extra = run(opts, env, ui, results)
    except BenchError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130
    duration = time.monotonic() - t0
    if opts.quick:
        results.notes.append("--quick run: tiny instance counts, the figures are not meaningful.")
    results.notes.append(f"Load average at start {host['loadavg']}: other work on this machine "
                         "inflates every figure; compare ratios measured in the same run.")
    print_table(results, console, f"dftui benchmarks ({'quick' if opts.quick else 'full'} run, "
                f"PostgreSQL {pg_version}, {duration:.0f} s)")
    for line in extra:
        console.print(line.strip("`\n") if line.startswith("```") else line.strip(), markup=False)
    target = args.results or (None if opts.quick or opts.only else DEFAULT_RESULTS)
    if target is not None and not args.no_results:
        command = "python -m benchmarks" + ("" if not argv else " " + shlex.join(argv))
        write_results(target, results, host, pg_version, command, started, duration,
                      extra="\n".join(extra))
        console.print(f"results written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
