#!/usr/bin/env python3
"""CPU by bucket from `perf script -F comm,tid,ip,sym,dso` output (see benches/profile.sh)."""
import sys, re, collections
# Buckets, tried in order on a frame's symbol; the first that matches names it.
B = [
 ("allocation", re.compile(r"^(mi_|_mi_|mi_free|malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|__libc_malloc|__libc_free|_int_realloc|malloc_consolidate|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc::|tcache|unlink_chunk|__GI___libc_free|__GI___libc_malloc)")),
 ("tracing", re.compile(r"(^|<|&)tracing(_core|_subscriber)?::")),
 ("metrics", re.compile(r"(^|<|&)(metrics|metrics_util|metrics_exporter_prometheus)::")),
 ("engine (stockd_domain)", re.compile(r"(^|<|&)stockd_domain::")),
 ("log writer (stockd::storage)", re.compile(r"(^|<|&)stockd::storage::")),
 ("shard actor + router", re.compile(r"(^|<|&)stockd::shard::")),
 ("stockd grpc handlers", re.compile(r"(^|<|&)stockd::(grpc|proto)::")),
 ("tonic + prost", re.compile(r"(^|<|&)(tonic|tonic_prost|tonic_health|prost|tower|tower_http)::")),
 ("HTTP/2 (h2, hyper)", re.compile(r"(^|<|&)(h2|hyper|hyper_util|http|http_body|bytes)::")),
 ("tokio scheduling + I/O driver", re.compile(r"(^|<|&)(tokio|mio|tokio_stream)::")),
]
KERNEL = [
 ("kernel: fdatasync/ext4", re.compile(r"fsync|ext4|jbd2|blk_|nvme|virtio_blk|iomap|filemap")),
 ("kernel: TCP/loopback", re.compile(r"tcp_|sock_|inet_|ip_|skb|net_rx|__netif|loopback|sendmsg|recvmsg|writev|readv")),
 ("kernel: futex/epoll/sched", re.compile(r"futex|epoll|schedule|wake_up|try_to_wake|ttwu|pick_next|finish_task_switch|eventfd|nanosleep|hrtimer")),
]
def parse(path):
    samples=[]; cur=None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur: samples.append(cur); cur=None
            continue
        if not line.startswith("\t") and not line.startswith(" "):
            cur=(line.split()[0], [])
            continue
        if cur is None: continue
        parts=line.strip().split(" ",1)
        if len(parts)<2: continue
        rest=parts[1]
        m=re.match(r"(.*) \((.*)\)$", rest)
        sym,dso=(m.group(1),m.group(2)) if m else (rest,"")
        cur[1].append((sym,dso))
    if cur: samples.append(cur)
    return samples
def user_bucket(sym):
    for name,rx in B:
        if rx.search(sym): return name
    return None
def kbucket(stack):
    text=" ".join(s for s,d in stack if "kernel" in d)
    for name,rx in KERNEL:
        if rx.search(text): return name
    return "kernel: other"
def self_bucket(stack):
    sym,dso=stack[0]
    if "kernel" in dso:
        return kbucket(stack)
    b=user_bucket(sym)
    if b: return b
    for s,d in stack[1:]:
        b=user_bucket(s)
        if b and b!="allocation": return b
    return "other: "+ (sym[:60])
def main():
    path=sys.argv[1]; samples=parse(path); n=len(samples)
    comm=collections.Counter(c for c,_ in samples)
    selfc=collections.Counter(); child=collections.Counter()
    for c,st in samples:
        if not st: continue
        selfc[self_bucket(st)]+=1
        seen=set()
        for s,d in st:
            b=user_bucket(s) if "kernel" not in d else None
            if b: seen.add(b)
        if any("kernel" in d for s,d in st): seen.add("kernel (any)")
        for b in seen: child[b]+=1
    print(f"{path}: {n} samples; threads: " + ", ".join(f"{k} {100*v/n:.1f}%" for k,v in comm.most_common()))
    print("self %:")
    others=0
    for k,v in selfc.most_common():
        if k.startswith("other: "):
            others+=v; continue
        print(f"  {100*v/n:5.1f}  {k}")
    print(f"  {100*others/n:5.1f}  other (std, core, hashbrown, libc...)")
    print("children % (a frame of it anywhere on the stack):")
    for k,v in child.most_common():
        print(f"  {100*v/n:5.1f}  {k}")
    if len(sys.argv)>2:
        print("top other self symbols:")
        for k,v in [(k,v) for k,v in selfc.most_common() if k.startswith("other")][:15]:
            print(f"  {100*v/n:5.1f}  {k}")
main()
