"""Start-up wiring and the run loop of the daemon (explorer spec §6.0, with the fixes).

Order: identity → redis (waits until reachable) → outbox (drains what a previous run left) →
managed domains → primitives → cache into memory, counters → 4to6 interface + converge →
re-apply every live reservation (level-triggered) → then concurrently: registration (retried
until the explorer accepts it; uptime and stats wait for it), uptime every 10 min, the engine,
outbox delivery, the reconcile/watch loop. SIGTERM/SIGINT stop it cleanly between two jobs.

Unlike upstream nothing after the seed is fatal: an unreachable explorer or redis is retried
with back-off and logged, because a gateway that exits stops serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tfgateway import __version__
from tfgateway.config import Config
from tfgateway.declared.file import OPERATOR
from tfgateway.declared.source import DeclaredSource
from tfgateway.engine.cache import ReservationCache
from tfgateway.engine.engine import Engine
from tfgateway.engine.outbox import Outbox
from tfgateway.explorer.client import Backoff, ExplorerClient, ExplorerError, gateway_body, retrying
from tfgateway.explorer.sender import PutSender
from tfgateway.model.reservation import Reservation
from tfgateway.node.identity import Identity, load_or_create
from tfgateway.node.location import resolve_location
from tfgateway.primitives.dns import DelegateProvisioner, DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs, ProofMode
from tfgateway.primitives.proof import ProofChecker
from tfgateway.primitives.provisioner import Provisioner, ProvisionError
from tfgateway.primitives.proxy import ProxyProvisioner, ReverseProxyProvisioner
from tfgateway.primitives.termination import TerminationPolicy
from tfgateway.store.batch import AutoPipeline
from tfgateway.store.url import check_auth, connect
from tfgateway.telemetry.metrics import Metrics

__all__ = ["SENTINEL_KEY", "Agent", "host_addresses", "host_uptime", "run"]

log = logging.getLogger("tfgateway")

SENTINEL_KEY = "tfgateway:alive"
UNUSED_EXPLORER = "http://explorer.invalid/api/v1"
"""Standalone: the explorer client is built (the engine and outbox hold one) but never used."""
WATCH_INTERVAL = 1.0
PROOF_TICK = 30.0
"""Longest pause between two looks at which name proofs are due."""
SENDER_BACKLOG = 64
"""Pending outbox messages from which result PUTs go through the sender process: more than
the outbox has in flight (`outbox.CONCURRENCY`), i.e. results wait for a turn. (256 when 16
were in flight; with 64 in flight a catch-up of 5,000 never held 256, and its PUTs cost the
agent's own process 0.3 ms each: benchmarks/agent.)"""


def host_uptime() -> int:
    """Seconds since boot (gopsutil `host.Info().Uptime`)."""
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0


def host_addresses() -> set[str]:
    """Every address configured on this host (IPv6 from if_inet6, IPv4 local routes)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0] if line.split() else ""
            if len(raw) == 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    with contextlib.suppress(OSError):
        previous = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|--"):
                previous = text[3:].strip()
            elif text.startswith("/32 host LOCAL") and previous:
                with contextlib.suppress(ValueError):
                    found.add(str(ipaddress.IPv4Address(previous)))
    return found


def _backoff_factory(maximum: float) -> Callable[[], Backoff]:
    return lambda: Backoff(initial=0.2, maximum=maximum)


class Agent:
    """The running gateway; `run()` until `stop()`."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        *,
        fourtosix_factory: Callable[[bytes, str, str], Any] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self._fourtosix_factory = fourtosix_factory
        self._handle_signals = handle_signals
        self.identity = identity
        password = {} if config.redis_password is None else {"password": config.redis_password}
        self.redis: aioredis.Redis = connect(config.redis, socket_timeout=10.0, **password)
        # Every writer shares one auto-pipeline: the commands of concurrent jobs travel together.
        self.batch = AutoPipeline(self.redis)
        self.metrics = Metrics()
        self.standalone = not config.explorer
        self.explorer = ExplorerClient(
            config.explorer or UNUSED_EXPLORER,
            identity,
            timeout=config.request_timeout,
            on_error=self.metrics.explorer_error,
        )
        # Result PUTs from a child process, on the other core (explorer/sender.py).
        self.sender: PutSender | None = None
        if not self.standalone:
            self.sender = PutSender(
                self.explorer.base,
                identity.seed,
                timeout=config.request_timeout,
                log_format=config.log_format,
                # only for a backlog: single results go out from here, with no second
                # interpreter in memory between bursts
                wanted=lambda: self.outbox.depth >= SENDER_BACKLOG,
            )
            self.explorer.put_via = self.sender.put_result
        self.registered = asyncio.Event()
        self.outbox = Outbox(
            self.batch,
            self.explorer,
            backoff=_backoff_factory(config.max_backoff),
            stats_gate=self.registered,
        )
        self.metrics.track_outbox(lambda: self.outbox.depth)
        self.names = NameProofs(
            self.batch,
            mode=config.name_proof,
            checker=(
                ProofChecker(config.proof_resolvers, config.proof_timeout)
                if config.name_proof is ProofMode.REQUIRED
                else None
            ),
            recheck_interval=config.proof_recheck_interval,
            grace=config.proof_grace,
            managed_domains=config.domains,
            trusted_users=frozenset({OPERATOR}),  # the operator's own file needs no proof
        )
        self.dns = DNSStore(self.batch, identity.node_id, config.nameservers, proofs=self.names)
        self.own_addresses: list[str] = []
        termination = TerminationPolicy(config.terminate_tls, config.terminate_tls_redirect)

        def proxies(declared: bool) -> tuple[ProxyProvisioner, ReverseProxyProvisioner]:
            """The proxy provisioners of one source (the operator's file: `declared`)."""
            return ProxyProvisioner(
                self.batch,
                identity.node_id,
                proofs=self.names,
                own_addresses=self.own_addresses,
                allow_private=config.allow_private_backends,
                termination=termination,
                declared=declared,
            ), ReverseProxyProvisioner(
                self.batch,
                identity,
                self.user_key,
                proofs=self.names,
                termination=termination,
                declared=declared,
            )

        self.proxy, reverse = proxies(declared=False)
        self.provisioners: dict[str, Provisioner] = {
            "subdomain": SubdomainProvisioner(self.dns),
            "domain_delegate": DelegateProvisioner(self.dns),
            "proxy": self.proxy,
            "reverse_proxy": reverse,
        }
        self.fourtosix: Any = None
        self.fourtosix_ready = False
        self.declared: DeclaredSource | None = None
        declared_proxy, declared_reverse = proxies(declared=True)
        self.declared_provisioners: dict[str, Provisioner] = {
            "subdomain": self.provisioners["subdomain"],
            "domain_delegate": self.provisioners["domain_delegate"],
            "proxy": declared_proxy,
            "reverse_proxy": declared_reverse,
        }
        self.engine = Engine(
            identity=identity,
            explorer=self.explorer,
            cache=ReservationCache(self.batch),
            outbox=self.outbox,
            provisioners=self.provisioners,
            metrics=self.metrics,
            poll_interval=config.poll_interval,
            reconcile_interval=config.reconcile_interval,
            replay_interval=config.replay_interval,
            backoff=_backoff_factory(max(config.max_backoff, config.poll_interval)),
        )
        if config.workloads:
            host = config.gateway_addresses[0] if config.gateway_addresses else "GATEWAY"
            if ":" in host:
                host = f"[{host}]"
            self.declared = DeclaredSource(
                Path(config.workloads),
                self.batch,
                self.declared_provisioners,
                lock=self.engine.lock,
                allow_private=config.allow_private_backends,
                tunnel_remote=f"{host}:{config.tcp_client_port}",
                metrics=self.metrics,
            )
        self._stop = asyncio.Event()
        self._token = secrets.token_hex(8)

    # -- helpers -----------------------------------------------------------------------------

    async def user_key(self, tid: int) -> bytes:
        """The user's ed25519 public key from the phonebook (reverse-proxy secrets, v ≥ 1)."""
        try:
            user = await self.explorer.get_user(tid)
        except ExplorerError as exc:
            if exc.retryable:
                raise  # transient: the engine retries, the user is not blamed
            raise ProvisionError(f"cannot get the public key of user {tid}: {exc}") from None
        try:
            key = bytes.fromhex(user.pubkey)
        except ValueError:
            raise ProvisionError(f"user {tid} has an invalid public key in the phonebook") from None
        if len(key) != 32:
            raise ProvisionError(f"user {tid} has a public key of {len(key)} bytes, not 32")
        return key

    def refresh_own_addresses(self) -> None:
        addresses = set(self.config.gateway_addresses)
        if self.config.detect_addresses:
            addresses |= host_addresses()
        normalized = sorted({str(ipaddress.ip_address(a)) for a in addresses})
        if normalized != self.own_addresses:
            self.own_addresses[:] = normalized
            log.info("own addresses (never proxy targets): %s", ", ".join(normalized) or "none")

    async def wait_for_redis(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                await check_auth(self.config.redis, self.config.redis_password)
                await self.redis.ping()
                return
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("redis %s not reachable (%s); retrying in %.1fs", self.config.redis,
                            exc, delay)  # fmt: skip
                await asyncio.sleep(delay)

    # -- start-up ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        cfg = self.config
        log.info(
            "tfgateway %s starting: node %s, %s, workloads file %s, redis %s, event loop %s",
            __version__,
            self.identity.node_id,
            "standalone (no explorer)" if self.standalone else f"explorer {self.explorer.base}",
            cfg.workloads or "none",
            cfg.redis.split("@")[-1],
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        if self.standalone and self.declared is None:
            log.warning("neither --explorer nor --workloads: this gateway serves nothing new")
        self.refresh_own_addresses()
        await self.wait_for_redis()
        pending = await self.outbox.load()
        if pending:
            log.info("outbox: %d messages from the previous run to deliver", pending)
        await self.dns.setup_managed_domains(cfg.domains)
        await self.names.start()
        if self.names.checker is not None and self.names.enforced:
            checker = self.names.checker
            if checker.problem:
                log.error("name proofs: %s; claims that need proof are refused", checker.problem)
            else:
                log.info("name proofs: looked up with %s", ", ".join(checker.resolvers))
        await self.engine.load()
        if self.declared is not None:
            await self.declared.load_records()
        if cfg.fourtosix_enabled:
            await self.setup_fourtosix()
        if self.declared is not None:
            # After 4to6 is set up (its peers are among the entries), before serving.
            await self.declared.reload("start")
        await self.redis.set(SENTINEL_KEY, self._token)
        # Everything else is re-applied by the watch loop's first pass, while polling goes on.

    async def prepare_until_ready(self) -> None:
        """`prepare`, again after a redis failure half-way (every step is idempotent)."""
        backoff = Backoff(initial=0.5, maximum=10.0)
        while True:
            try:
                await self.prepare()
                return
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("start-up interrupted by redis: %s; again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def setup_fourtosix(self) -> None:
        from tfgateway.primitives.fourtosix import (
            FourToSixProvisioner,  # netlink only when 4to6 is on
        )

        factory = self._fourtosix_factory or FourToSixProvisioner
        try:
            provisioner = factory(self.identity.seed, self.config.endpoint, self.config.wg_iface)
        except ValueError as exc:
            raise SystemExit(f"tfgateway: --endpoint: {exc}") from None
        self.fourtosix = provisioner
        self.engine.provisioners["gateway4to6"] = provisioner
        try:
            await provisioner.setup()
        except Exception as exc:
            log.error(
                "4to6: cannot set up WireGuard interface %s (%s); gateway4to6 workloads are "
                "refused until it works (retried at every reconcile)",
                self.config.wg_iface,
                exc,
            )
            return
        self.fourtosix_ready = True
        self.declared_provisioners["gateway4to6"] = provisioner
        self.engine.converge["gateway4to6"] = self.converge_fourtosix
        # Before any new gateway4to6 job: the peers must be those of the live workloads.
        await self.converge_fourtosix(self.engine.live_of_type("gateway4to6"))

    async def converge_fourtosix(self, live: list[Reservation]) -> None:
        """The peers are the explorer's live 4to6 workloads and the file's applied peers."""
        declared = [] if self.declared is None else self.declared.live_of_type("gateway4to6")
        await self.fourtosix.converge([*live, *declared])

    # -- background tasks --------------------------------------------------------------------

    async def register(self) -> None:
        location = await resolve_location(
            self.config.location, self.config.explorer, self.config.geoip_url
        )
        body = gateway_body(
            node_id=self.identity.node_id,
            public_key_hex=self.identity.public_key_hex,
            farm_id=self.config.farm,
            os_version=f"v{__version__}@python",
            location=location,
            domains=list(self.config.domains),
            nameservers=list(self.config.nameservers),
            tcp_router_port=self.config.tcp_client_port,
            free_to_use=self.config.free,
        )
        backoff = Backoff(initial=0.5, maximum=max(self.config.max_backoff, 2.0))
        while True:
            try:
                await self.explorer.register(body)
                break
            except ExplorerError as exc:
                delay = backoff.next_delay()
                hint = (
                    "; if the explorer refuses the location, pass --location lat,lon"
                    if exc.status is not None
                    else ""
                )
                log.error("registration failed: %s%s; retrying in %.1fs", exc, hint, delay)
                await asyncio.sleep(delay)
        log.info("registered with the explorer as %s", self.identity.node_id)
        self.registered.set()
        try:
            await self.outbox.stats(self.engine.counters.as_dict())
        except (RedisError, OSError) as exc:
            log.warning("cannot queue the first stats report: %s", exc)
        self.outbox.wake()

    async def uptime_loop(self) -> None:
        await self.registered.wait()
        while True:
            try:
                await retrying(
                    lambda: self.explorer.update_uptime(host_uptime()),
                    what="uptime report",
                    backoff=Backoff(initial=0.5, maximum=60.0),
                    give_up_after=self.config.uptime_interval,
                )
            except ExplorerError as exc:
                log.error("uptime report failed: %s", exc)
            await asyncio.sleep(self.config.uptime_interval)

    async def watch_loop(self) -> None:
        """Level-triggered safety net: notice redis coming back or losing its data, and
        re-apply everything periodically."""
        loop = asyncio.get_running_loop()
        next_full = loop.time()  # the first pass right away: re-apply what the cache holds
        was_down = False
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                alive = await self.redis.get(SENTINEL_KEY)
            except (RedisError, OSError) as exc:
                if not was_down:
                    log.warning("redis unreachable: %s", exc)
                was_down = True
                continue
            try:
                if alive is None:
                    log.warning("redis lost its data: restoring every live workload")
                    await self.restore_after_data_loss()
                    next_full = loop.time() + self.config.reconcile_interval
                elif was_down or loop.time() >= next_full:
                    if was_down:
                        log.info("redis is back: re-applying every live workload")
                    await self.reconcile()
                    next_full = loop.time() + self.config.reconcile_interval
                if was_down:
                    # Jobs stopped for redis would otherwise wait out the engine's back-off
                    # (up to --max-backoff) or the poll interval: poll now.
                    self.engine.wake()
                was_down = False
            except (RedisError, OSError) as exc:
                log.warning("reconcile interrupted: %s", exc)
                was_down = True

    async def reconcile(self) -> None:
        self.refresh_own_addresses()
        if self.fourtosix is not None and not self.fourtosix_ready:
            await self.setup_fourtosix_retry()
        started = asyncio.get_running_loop().time()
        applied = await self.engine.reconcile()
        if self.declared is not None:
            applied += await self.declared.reapply()
        await self.names.settle()
        elapsed = asyncio.get_running_loop().time() - started
        log.info("reconcile: %d live reservations re-applied in %.2fs", applied, elapsed)

    async def proof_loop(self) -> None:
        """Recheck due name proofs; a name proven again is served at once (a reconcile)."""
        while True:
            await asyncio.sleep(min(self.names.retry_interval, PROOF_TICK))
            try:
                summary = await self.names.recheck_due()
                self.metrics.set_name_proofs(await self.names.counts())
                if summary.restored:
                    await self.reconcile()
            except (RedisError, OSError) as exc:
                log.warning("name proofs: recheck interrupted: %s", exc)

    async def setup_fourtosix_retry(self) -> None:
        try:
            await self.fourtosix.setup()
        except Exception as exc:
            log.debug("4to6: interface still not available: %s", exc)
            return
        async with self.engine.lock:
            await self.converge_fourtosix(self.engine.live_of_type("gateway4to6"))
        self.fourtosix_ready = True
        self.declared_provisioners["gateway4to6"] = self.fourtosix
        self.engine.converge["gateway4to6"] = self.converge_fourtosix
        if self.declared is not None:
            self.declared.request_reload()  # peers refused while the interface was missing
        log.info("4to6: interface %s is ready", self.config.wg_iface)

    async def restore_after_data_loss(self) -> None:
        await self.dns.setup_managed_domains(self.config.domains)
        applied = await self.engine.reconcile(rewrite_cache=True)
        if self.declared is not None:
            applied += await self.declared.restore()
        await self.names.settle()
        await self.outbox.persist_all()
        await self.redis.set(SENTINEL_KEY, self._token)
        self.engine.request_replay()
        log.info("restored %d live workloads after redis lost its data", applied)

    # -- run ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: read the workloads file again."""
        if self.declared is None:
            log.info("SIGHUP: no --workloads file to reload")
            return
        self.declared.request_reload()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if self._handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        if self._handle_signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.config.metrics_listen:
            self.metrics.serve(self.config.metrics_listen)
        preparing = asyncio.create_task(self.prepare_until_ready())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not preparing.done():
            preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await preparing
            await self.close()
            return 0
        stopping.cancel()
        try:
            preparing.result()
        except ValueError as exc:  # invalid managed domain already taken, etc.
            log.error("cannot start: %s", exc)
            await self.close()
            return 1
        tasks = {asyncio.create_task(self.watch_loop(), name="watch")}
        if not self.standalone:
            tasks |= {
                asyncio.create_task(self.register(), name="register"),
                asyncio.create_task(self.uptime_loop(), name="uptime"),
                asyncio.create_task(self.outbox.run(), name="outbox"),
            }
        if self.declared is not None:
            tasks.add(asyncio.create_task(self.declared.run(), name="workloads-file"))
        if self.names.enforced:
            tasks.add(asyncio.create_task(self.proof_loop(), name="name-proofs"))
        engine_task = asyncio.create_task(
            self.engine.run() if not self.standalone else self._stop.wait(), name="engine"
        )
        stopper = asyncio.create_task(self._stop.wait(), name="stop")
        running: set[asyncio.Task[Any]] = {*tasks, engine_task, stopper}
        code = 0
        while not stopper.done():
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in done if t is not stopper and t.exception() is not None]
            for task in crashed:
                log.error("task %s crashed", task.get_name(), exc_info=task.exception())
                code = 1
            if crashed:
                break
        log.info("stopping")
        async with self.engine.lock:  # never in the middle of a job
            engine_task.cancel()
        for task in tasks | {stopper}:
            task.cancel()
        await asyncio.gather(engine_task, *tasks, stopper, return_exceptions=True)
        if not self.standalone:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.outbox.deliver_once()
        await self.close()
        log.info("stopped")
        return code

    async def close(self) -> None:
        if self.fourtosix is not None:
            with contextlib.suppress(Exception):
                await self.fourtosix.close()
        if self.sender is not None:
            with contextlib.suppress(Exception):
                await self.sender.aclose()
        await self.explorer.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def run(config: Config) -> int:
    identity = load_or_create(config.seed)
    agent = Agent(config, identity)
    return await agent.run()
