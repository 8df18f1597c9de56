#!/usr/bin/env python3
"""Drives reserve traffic at a running stockd over gRPC (127.0.0.1 only).

Used by .ci/prometheus-check.sh. Needs grpcio and the Python stubs generated from
proto/inventory/v1/inventory.proto (pass their folder with --stubs).

What it does:
  * configures channels WEB (allocation 7000 bps) and SOCIAL (3000 bps);
  * sets stock: PLENTY-* products (a million units each) that never run out, and
    SCARCE-* products (a few units) that run out, so Reserve answers "rejected", and
    two-line allow_partial carts answer "partial";
  * for --duration seconds (and at most --max-calls calls), several client threads
    place holds on both channels and confirm, release, update (cart update) or abandon
    them, and place holds with ttl_seconds=1 that expire, so that every hold lifecycle
    event (created, updated, confirmed, released, expired) and every reserve outcome
    (reserved, partial, rejected) happens on every channel; some orders are fulfilled
    or cancelled, and a few calls fail on purpose (NOT_FOUND) so the RPC histogram has
    more than one status code;
  * checks client-side that all of that happened, that no call failed unexpectedly,
    and that the ttl=1 holds really ended EXPIRED.
Exits non-zero on any failure.
"""

import argparse
import collections
import random
import sys
import threading
import time

CHANNELS = {"WEB": 7000, "SOCIAL": 3000}
LOCATION = "WH-1"
PLENTY = [f"PLENTY-{i:02d}" for i in range(12)]
SCARCE = [f"SCARCE-{i:02d}" for i in range(6)]
SCARCE_UNITS = 30  # WEB is entitled to 21, SOCIAL to 9: both run out quickly.


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="host:port of stockd's gRPC server")
    ap.add_argument("--stubs", required=True, help="folder of the generated *_pb2 modules")
    ap.add_argument("--duration", type=float, default=25.0)
    ap.add_argument("--max-calls", type=int, default=150_000)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    if not args.target.startswith("127.0.0.1:"):
        sys.exit("drive.py: only 127.0.0.1 targets are allowed")

    sys.path.insert(0, args.stubs)
    import grpc  # noqa: E402
    from inventory.v1 import inventory_pb2 as pb  # noqa: E402
    from inventory.v1 import inventory_pb2_grpc as pbg  # noqa: E402

    channel = grpc.insecure_channel(args.target)
    grpc.channel_ready_future(channel).result(timeout=30)
    inv = pbg.InventoryServiceStub(channel)
    admin = pbg.AdminServiceStub(channel)
    timeout = 10.0

    # ------------------------------------------------------------------ setup
    for ref, bps in CHANNELS.items():
        admin.UpsertChannel(
            pb.UpsertChannelRequest(channel=pb.Channel(channel_ref=ref, allocation_bps=bps)),
            timeout=timeout,
        )
    listed = admin.ListChannels(pb.ListChannelsRequest(), timeout=timeout)
    print(
        "channels:",
        ", ".join(f"{c.channel_ref}={c.allocation_bps}bps" for c in listed.channels),
        f"(total {listed.allocation_bps_total})",
    )
    counts = [pb.StockCount(product_ref=p, location_ref=LOCATION, quantity=1_000_000) for p in PLENTY]
    counts += [pb.StockCount(product_ref=p, location_ref=LOCATION, quantity=SCARCE_UNITS) for p in SCARCE]
    res = admin.SetStock(pb.SetStockRequest(counts=counts), timeout=timeout)
    applied = sum(1 for r in res.results if r.status == pb.STOCK_COUNT_STATUS_APPLIED)
    print(f"stock: {applied}/{len(counts)} counts applied ({len(PLENTY)} plenty, {len(SCARCE)} scarce)")
    if applied != len(counts):
        sys.exit("drive.py: SetStock did not apply every count")

    # ---------------------------------------------------------------- traffic
    lock = threading.Lock()
    calls = collections.Counter()  # (method, code)
    outcomes = collections.Counter()  # (channel, outcome)
    events = collections.Counter()  # (channel, event) as seen by the client
    unexpected = []
    expiring = []  # (channel, hold_ref) placed with ttl_seconds=1
    total = [0]
    deadline = time.monotonic() + args.duration
    outcome_name = {
        pb.RESERVE_OUTCOME_RESERVED: "reserved",
        pb.RESERVE_OUTCOME_PARTIAL: "partial",
        pb.RESERVE_OUTCOME_REJECTED: "rejected",
    }

    def budget():
        with lock:
            if total[0] >= args.max_calls or time.monotonic() >= deadline:
                return False
            total[0] += 1
            return True

    def call(method, fn, request, expect=None):
        """Calls fn(request); returns the response, or None on an error status.
        `expect` is the status code this call is meant to fail with, if any."""
        try:
            resp = fn(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as e:
            resp = None
            code = e.code().name
            if code != expect:
                with lock:
                    if len(unexpected) < 20:
                        unexpected.append(f"{method}: {code}: {e.details()}")
                    elif len(unexpected) == 20:
                        unexpected.append("... (more)")
        with lock:
            calls[(method, code)] += 1
        return resp

    def reserve(ch, hold, lines, ttl=0, partial=False):
        req = pb.ReserveRequest(
            hold_ref=hold, channel_ref=ch, lines=lines, ttl_seconds=ttl, allow_partial=partial
        )
        resp = call("Reserve", inv.Reserve, req)
        if resp is None:
            return None
        name = outcome_name.get(resp.outcome, f"unknown-{resp.outcome}")
        with lock:
            outcomes[(ch, name)] += 1
        return name

    def line(product, qty):
        return pb.ReserveLine(product_ref=product, location_ref=LOCATION, quantity=qty)

    def worker(wid):
        rng = random.Random(wid)
        i = 0
        while budget():
            i += 1
            # Blocks of 20 calls alternate channels, so every kind of call below runs on both.
            ch = "WEB" if (i // 20 + wid) % 2 == 0 else "SOCIAL"
            hold = f"h-{wid}-{i}"
            kind = i % 20
            if kind == 0:
                # Abandoned cart: expires after 1 s.
                if reserve(ch, hold, [line(rng.choice(PLENTY), 1)], ttl=1) in ("reserved", "partial"):
                    with lock:
                        expiring.append((ch, hold))
                        events[(ch, "created")] += 1
            elif kind in (3, 11):
                # A scarce product, all-or-nothing: reserved until it runs out, then rejected.
                out = reserve(ch, hold, [line(rng.choice(SCARCE), 2)])
                if out == "reserved":
                    with lock:
                        events[(ch, "created")] += 1
                    if rng.random() < 0.5:
                        if call("ReleaseHold", inv.ReleaseHold, pb.ReleaseHoldRequest(hold_ref=hold)):
                            with lock:
                                events[(ch, "released")] += 1
            elif kind == 7:
                # Two-line cart with allow_partial: partial once the scarce line runs short.
                out = reserve(
                    ch, hold, [line(rng.choice(PLENTY), 1), line(rng.choice(SCARCE), 4)], partial=True
                )
                if out in ("reserved", "partial"):
                    with lock:
                        events[(ch, "created")] += 1
                    if call("ReleaseHold", inv.ReleaseHold, pb.ReleaseHoldRequest(hold_ref=hold)):
                        with lock:
                            events[(ch, "released")] += 1
            elif kind == 9:
                # Deliberate failures, so the RPC histogram carries non-OK codes.
                call(
                    "ConfirmHold",
                    inv.ConfirmHold,
                    pb.ConfirmHoldRequest(hold_ref=f"no-such-hold-{wid}-{i}", order_ref=f"o-{wid}-{i}"),
                    expect="NOT_FOUND",
                )
                call(
                    "GetAvailability",
                    inv.GetAvailability,
                    pb.GetAvailabilityRequest(
                        channel_ref=ch,
                        keys=[pb.PositionKey(product_ref=p, location_ref=LOCATION) for p in PLENTY[:3]],
                    ),
                )
            else:
                product = rng.choice(PLENTY)
                if reserve(ch, hold, [line(product, rng.randint(1, 3))]) != "reserved":
                    continue
                with lock:
                    events[(ch, "created")] += 1
                r = rng.random()
                if r < 0.12:
                    # Cart update: new lines replace the old ones.
                    other = rng.choice([p for p in PLENTY if p != product])
                    if reserve(ch, hold, [line(product, 4), line(other, 1)]) == "reserved":
                        with lock:
                            events[(ch, "updated")] += 1
                    if call("ReleaseHold", inv.ReleaseHold, pb.ReleaseHoldRequest(hold_ref=hold)):
                        with lock:
                            events[(ch, "released")] += 1
                elif r < 0.45:
                    order = f"o-{wid}-{i}"
                    if call(
                        "ConfirmHold",
                        inv.ConfirmHold,
                        pb.ConfirmHoldRequest(hold_ref=hold, order_ref=order),
                    ):
                        with lock:
                            events[(ch, "confirmed")] += 1
                        if r < 0.30:
                            call("FulfilOrder", inv.FulfilOrder, pb.FulfilOrderRequest(order_ref=order))
                        elif r < 0.35:
                            call("CancelOrder", inv.CancelOrder, pb.CancelOrderRequest(order_ref=order))
                elif r < 0.85:
                    if call("ReleaseHold", inv.ReleaseHold, pb.ReleaseHoldRequest(hold_ref=hold)):
                        with lock:
                            events[(ch, "released")] += 1
                elif r < 0.90:
                    call("GetHold", inv.GetHold, pb.GetHoldRequest(hold_ref=hold))
                # else: left active (default TTL), so the active-holds gauge stays above 0.

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    n = sum(calls.values())
    print(f"traffic: {n} calls in {elapsed:.1f} s ({n / max(elapsed, 1e-9):.0f}/s) on {args.threads} threads")

    # The last ttl=1 holds need 1 s plus the server's expiry grace to expire.
    time.sleep(2.0)
    expired = 0
    sample = expiring[-50:] + expiring[:50]
    not_expired = []
    for ch, hold in sample:
        resp = call("GetHold", inv.GetHold, pb.GetHoldRequest(hold_ref=hold))
        if resp is not None and resp.hold.state == pb.HOLD_STATE_EXPIRED:
            expired += 1
        elif resp is not None:
            not_expired.append(f"{hold}: {pb.HoldState.Name(resp.hold.state)}")
    for ch, hold in expiring:
        events[(ch, "expired")] += 1
    channel.close()

    # ----------------------------------------------------------------- report
    print("calls by method and code:")
    for (method, code), c in sorted(calls.items()):
        print(f"  {method:16s} {code:20s} {c}")
    print("reserve outcomes by channel (client side):")
    for (ch, o), c in sorted(outcomes.items()):
        print(f"  {ch:8s} {o:10s} {c}")
    print("hold events by channel (client side, expected):")
    for (ch, e), c in sorted(events.items()):
        print(f"  {ch:8s} {e:10s} {c}")
    print(f"ttl=1 holds: {len(expiring)} placed; {expired}/{len(sample)} sampled are EXPIRED")

    problems = []
    if unexpected:
        problems.append("unexpected RPC errors:\n    " + "\n    ".join(unexpected))
    for ch in CHANNELS:
        for o in ("reserved", "partial", "rejected"):
            if outcomes[(ch, o)] == 0:
                problems.append(f"no Reserve on {ch} ended {o!r}")
        for e in ("created", "updated", "confirmed", "released", "expired"):
            if events[(ch, e)] == 0:
                problems.append(f"no hold on {ch} was {e}")
    if not sample or expired != len(sample):
        problems.append(
            f"ttl=1 holds did not all expire ({expired}/{len(sample)}): " + "; ".join(not_expired[:5])
        )
    if problems:
        print("drive.py: FAILED")
        for p in problems:
            print("  -", p)
        sys.exit(1)
    print("drive.py: ok")


if __name__ == "__main__":
    main()
