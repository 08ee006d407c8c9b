"""`millet serve`: online features over HTTP, speaking Feast's REST API.

`POST /get-online-features` takes Feast's request ({"entities": {"user_key": [...]}, "feature_service":
name | "features": ["view:feature", ...], "full_feature_names": bool}) and answers in Feast's response
shape, so Feast's own remote online store client (`online_store: type: remote`) works against it.
`POST /score` takes {"user_key": ...} and answers with the credit decision (millet/scoring/decisions.py)
from the same online read, with the model's and the feature service's versions.
`GET /health` reads the registry and the online store on every request: 200 when both answer, 503 with
the reason when either fails or the store does not answer within `HEALTH_TIMEOUT_S`; it needs no token.
Reads and decisions need a bearer token whose roles may read what is asked (auth.py), and each is
written to the audit log (audit.py). Bodies are capped at `MAX_BODY_BYTES` and `MAX_ENTITIES` keys.

It reads the packed records of Millet's online stores directly: a feature service's plan (which feature
views, which positions in their rows) is worked out once from the registry, and a lookup is one read per
feature view and one protobuf parse per record, with no per-feature protobuf objects built in between.
What reads the registry or the store runs in a worker thread, never on the event loop: a store that hangs
holds the requests that read it, not /health and the rest.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from millet.scoring.decisions import SERVICES, Decision, ServedModel, decide, served_model
from millet.scoring.registry import NoModel
from millet.serving.api.audit import AuditLog
from millet.serving.api.auth import NOBODY, Guard, Refused, check_exposure
from millet.serving.online.stores import PackedOnlineStore, decode_record, string_entity_keys
from millet.settings import Settings

MAX_ENTITIES = 1_000
MAX_CACHED_PLANS = 1_000
# A plan is rebuilt from the registry at most this long after it was made: the nightly publish may apply
# a changed feature service (a category's new features), which a running server must serve, not the old.
PLAN_TTL_S = 60.0
MAX_BODY_BYTES = 1 << 20  # 1,000 keys of Feast's JSON take about 40 kB: a megabyte is not a request
NO_TIMESTAMP = "1970-01-01T00:00:00Z"
HEALTH_TIMEOUT_S = 2.0  # a store that hangs is as unavailable as one that refuses
HEALTH_PROBE_KEY = "millet-health-probe"  # any id: the read must answer, found or not


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ViewPlan:
    view: object  # feast.FeatureView
    features: tuple[str, ...]  # as the view names them
    names: tuple[str, ...]  # as they appear in the response


@dataclass(frozen=True)
class Plan:
    steps: list[ViewPlan]
    resources: list  # what is read, as Feast's permissions see it: the FeatureService, or the FeatureViews
    target: str  # what is read, for people: "feature service 'x'" or "feature views 'a', 'b'"


@dataclass(frozen=True)
class Lookup:
    keys: list[str]
    plan: Plan


class OnlineReader:
    """Answers Feast online-feature requests from a FeatureStore whose online store is a packed one."""

    def __init__(self, store, clock=time.monotonic):
        if not isinstance(store.provider.online_store, PackedOnlineStore):
            raise TypeError("millet serve reads Millet's packed online stores; "
                            "see features/feature_store.yaml")
        self.store = store
        self.config = store.config
        self.online = store.provider.online_store
        self._plans: dict[tuple, tuple[float, Plan]] = {}  # request → (when made, plan)
        self._clock = clock

    @cached_property
    def join_key(self) -> str:
        (entity,) = [e for e in self.store.list_entities()]
        return entity.join_key

    # ---- request → plan -------------------------------------------------------------------------
    def lookup(self, body: bytes) -> Lookup:
        """What a Feast online-features request asks for; raises BadRequest when it is not one."""
        request = _parse(body)
        keys = self._entity_values(request.get("entities"))
        full = request.get("full_feature_names", False)
        if not isinstance(full, bool):
            raise BadRequest("'full_feature_names' must be true or false")
        return Lookup(keys, self._plan(request.get("feature_service"), request.get("features"), full))

    def answer(self, lookup: Lookup) -> dict:
        return self._response(lookup.keys, lookup.plan.steps)

    def service_plan(self, service: str) -> Plan:
        return self._plan(service, None, False)

    def features_of(self, key: str, service: str) -> dict:
        """One entity's features of `service` by name (None where absent): what a decision reads."""
        answer = self._response([key], self.service_plan(service).steps)
        return {name: result["values"][0]
                for name, result in zip(answer["metadata"]["feature_names"], answer["results"], strict=True)}

    def _entity_values(self, entities) -> list[str]:
        if not isinstance(entities, dict) or set(entities) != {self.join_key}:
            raise BadRequest(f"'entities' must be an object with exactly one key, {self.join_key!r}, "
                             "holding a list of values")
        values = entities[self.join_key]
        if not isinstance(values, list) or not values:
            raise BadRequest(f"'entities.{self.join_key}' must be a non-empty list")
        if len(values) > MAX_ENTITIES:
            raise BadRequest(f"at most {MAX_ENTITIES} entities per request, got {len(values)}")
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"every {self.join_key} must be a string")
        return values

    def _plan(self, service, features, full: bool) -> Plan:
        if (service is None) == (features is None or features == []):
            raise BadRequest("give exactly one of 'feature_service' or a non-empty 'features' list")
        # Types first: what is not a string cannot be a cache key (a dict there was a 500).
        if service is not None and not isinstance(service, str):
            raise BadRequest("'feature_service' must be a string")
        strings = isinstance(features, list) and all(isinstance(f, str) for f in features)
        if features is not None and not strings:
            raise BadRequest("'features' must be a list of 'feature_view:feature' strings")
        cache_key = (service, tuple(features or ()), full)
        if len(self._plans) >= MAX_CACHED_PLANS:  # any list of features is a plan: bound what is kept
            self._plans.clear()
        now, made = self._clock(), self._plans.get(cache_key)
        if made is None or now - made[0] > PLAN_TTL_S:
            made = now, (self._service_plan(service, full) if service is not None
                         else self._features_plan(features, full))
            self._plans[cache_key] = made
        return made[1]

    def _service_plan(self, service, full: bool) -> Plan:
        from feast.errors import FeatureServiceNotFoundException

        try:
            found = self.store.get_feature_service(service)
        except FeatureServiceNotFoundException:
            raise BadRequest(f"no feature service named {service!r}", status=404) from None
        wanted = {p.name: [f.name for f in p.features] for p in found.feature_view_projections}
        steps = [self._view_plan(view, wanted[view.name], full)
                 for view in self._views() if view.name in wanted]
        return Plan(steps, [found], f"feature service {service!r}")

    def _features_plan(self, features, full: bool) -> Plan:
        if not all(":" in f for f in features):
            raise BadRequest("'features' must be a list of 'feature_view:feature' strings")
        views = {view.name: view for view in self._views()}
        wanted: dict[str, list[str]] = {}
        for ref in features:
            view_name, name = ref.split(":", 1)
            view = views.get(view_name)
            if view is None or name not in {f.name for f in view.features}:
                raise BadRequest(f"unknown feature {ref!r}", status=404)
            wanted.setdefault(view_name, []).append(name)
        steps = [self._view_plan(views[name], names, full) for name, names in wanted.items()]
        return Plan(steps, [step.view for step in steps],
                    "feature views " + ", ".join(repr(name) for name in wanted))

    def _view_plan(self, view, names: list[str], full: bool) -> ViewPlan:
        shown = tuple(f"{view.name}__{n}" if full else n for n in names)
        return ViewPlan(view, tuple(names), shown)

    def _views(self):
        return self.store.list_feature_views()

    def check(self) -> None:
        """Read one record of every feature view from the online store; raises when the store (or the
        registry) does not answer. Nothing is cached: every call goes to the store."""
        views = self._views()
        if not views:
            raise RuntimeError(f"the registry holds no feature views for project {self.config.project!r}")
        probe = string_entity_keys([HEALTH_PROBE_KEY], self.join_key, self.config)
        for view in views:
            self.online.read_records(self.config, view, probe)

    # ---- plan → response, in Feast's shape ------------------------------------------------------------
    def _response(self, keys: list[str], plan: list[ViewPlan]) -> dict:
        key_bytes = string_entity_keys(keys, self.join_key, self.config)
        names = [self.join_key]
        results = [{"values": list(keys), "statuses": ["PRESENT"] * len(keys),
                    "event_timestamps": [NO_TIMESTAMP] * len(keys)}]
        for step in plan:
            names += step.names
            results += self._view_results(step, key_bytes)
        return {"metadata": {"feature_names": names}, "results": results}

    def _view_results(self, step: ViewPlan, key_bytes: list[bytes]) -> list[dict]:
        found = self.online.read_records(self.config, step.view, list(set(key_bytes)))
        requested = step.features
        columns = [[None] * len(key_bytes) for _ in requested]
        statuses = [["NOT_FOUND"] * len(key_bytes) for _ in requested]
        stamps = [NO_TIMESTAMP] * len(key_bytes)
        for row, key in enumerate(key_bytes):
            rec = found.get(key)
            if rec is None:
                continue
            digest, stamp, values = decode_record(rec)
            stamps[row] = _timestamp(stamp)
            positions = dict(self.online.positions(self.config, digest, requested))
            for i, name in enumerate(requested):
                if name in positions:  # a feature added since this row was written stays NOT_FOUND
                    columns[i][row] = _native(values[positions[name]])
                    statuses[i][row] = "PRESENT"
        return [{"values": columns[i], "statuses": statuses[i], "event_timestamps": list(stamps)}
                for i in range(len(requested))]


def _parse(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object")
    return request


def _native(value):
    which = value.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    native = getattr(value, which)
    if which in ("float_val", "double_val") and not math.isfinite(native):
        return "NaN" if math.isnan(native) else ("Infinity" if native > 0 else "-Infinity")
    return native


def _timestamp(stamp: datetime) -> str:
    """As Feast's response has it: RFC 3339 in UTC, fractional seconds only when there are some."""
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{stamp.microsecond:06d}".rstrip("0") if stamp.microsecond else "") + "Z"


def create_app(store, settings: Settings, health_timeout_s: float = HEALTH_TIMEOUT_S):
    """An ASGI app; `millet serve` runs it under uvicorn."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    reader = OnlineReader(store)
    scorer = Scorer(reader, settings)
    guard = Guard(store, settings)
    audit = AuditLog(settings.audit_log_path)
    off_loop = anyio.to_thread.run_sync  # the store's and the registry's reads (Redis, SQLite) block

    def read_allowed(caller, lookup: Lookup) -> dict:
        guard.allow_read(caller, lookup.plan.resources, lookup.plan.target)  # permissions: the registry's
        return reader.answer(lookup)

    def decide_allowed(caller, user_key: str) -> Decision:
        plans = [reader.service_plan(service) for service in SERVICES]
        guard.allow_read(caller, [r for plan in plans for r in plan.resources], "the decision's features")
        return scorer.score(user_key)

    async def get_online_features(request: Request) -> Response:
        caller, lookup, status = NOBODY, None, 200
        try:
            caller = await guard.identify(request.headers.get("authorization"))
            lookup = await off_loop(reader.lookup, await _body(request))
            answer = await off_loop(read_allowed, caller, lookup)
            # Built inside the try: an error while encoding it is audited as the 500 the client gets.
            return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
        except (BadRequest, Refused) as exc:
            status = exc.status
            return _refusal(exc)
        except Exception:
            status = 500  # what the client gets (Starlette answers any other error so): not a read made
            raise
        finally:
            audit.record(who=caller.name, roles=caller.roles, action="read_online",
                         target=lookup and lookup.plan.target, keys=lookup and len(lookup.keys),
                         status=status)

    async def health(request: Request) -> Response:
        try:
            # In a worker thread, abandoned at the deadline: a hung store must not hang the answer.
            with anyio.fail_after(health_timeout_s):
                await off_loop(reader.check, abandon_on_cancel=True)
        except TimeoutError:
            return _unavailable(f"the online store did not answer within {health_timeout_s:g} s")
        except Exception as exc:  # a health check reports, it does not raise
            return _unavailable(f"{type(exc).__name__}: {exc}")
        return JSONResponse({"status": "ok"})

    async def score(request: Request) -> Response:
        caller, keys, status = NOBODY, None, 200
        try:
            caller = await guard.identify(request.headers.get("authorization"))
            user_key = _user_key(_parse(await _body(request)))
            keys = 1
            decision = await off_loop(decide_allowed, caller, user_key)
            return JSONResponse(decision.to_dict())
        except (BadRequest, Refused) as exc:
            status = exc.status
            return _refusal(exc)
        except NoModel as exc:
            status = 503
            return _unavailable(str(exc))
        except Exception:
            status = 500
            raise
        finally:
            audit.record(who=caller.name, roles=caller.roles, action="score", target=", ".join(SERVICES),
                         keys=keys, status=status)

    def _unavailable(reason: str) -> Response:
        return JSONResponse({"status": "unavailable", "detail": reason}, status_code=503)

    def _refusal(exc: BadRequest | Refused) -> Response:
        body = exc.body() if isinstance(exc, Refused) else json.dumps({"detail": str(exc)})
        challenge = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return Response(body, status_code=exc.status, media_type="application/json", headers=challenge)

    return Starlette(routes=[Route("/get-online-features", get_online_features, methods=["POST"]),
                             Route("/score", score, methods=["POST"]),
                             Route("/health", health, methods=["GET"])],
                     lifespan=_lifespan(reader, audit))


def _lifespan(reader: OnlineReader, audit: AuditLog):
    import contextlib
    import gc

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # The registry's objects (thousands of fields) live as long as the server: read them once, then
        # keep them out of the collector's full passes, which otherwise stalled every request in flight
        # for ~150 ms now and then (bench/bench_load.py: a p99 25× the p50 at 64 requests a second).
        with contextlib.suppress(Exception):  # a registry not applied yet: /health says so, not startup
            reader.service_plan(SERVICES[0])
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            audit.close()

    return lifespan


async def _body(request) -> bytes:
    """The request's body, refused (413) past MAX_BODY_BYTES before more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(f"the body must be at most {MAX_BODY_BYTES:,} bytes", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"the body must be at most {MAX_BODY_BYTES:,} bytes", status=413)
    return bytes(body)


class Scorer:
    """Decisions from the online store: the features read as `POST /get-online-features` reads them, the
    model the registry serves now (reloaded when a new version is served)."""

    def __init__(self, reader: OnlineReader, settings: Settings):
        self.reader, self.settings = reader, settings
        self._model: ServedModel | None = None

    def score(self, user_key: str) -> Decision:
        model = self.model()
        features = {}
        for service in SERVICES:
            features |= self.reader.features_of(user_key, service)
        return decide(user_key, features, model, self.settings)

    def model(self) -> ServedModel:
        served = served_model(self.settings)
        if self._model is None or self._model.version != served.version:
            self._model = served
        return self._model


def _user_key(request: dict) -> str:
    user_key = request.get("user_key")
    if not isinstance(user_key, str) or not user_key:
        raise BadRequest("the body must be {\"user_key\": \"<pseudonymous key>\"}")
    return user_key


def serve(store, settings: Settings, host: str = "127.0.0.1", port: int = 6566) -> None:
    import uvicorn

    check_exposure(settings, host)
    uvicorn.run(create_app(store, settings), host=host, port=port, log_level="warning", access_log=False)
