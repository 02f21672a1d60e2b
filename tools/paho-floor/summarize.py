import sys, re, statistics, collections
rows = collections.defaultdict(list)
extra = collections.defaultdict(list)
for f in sys.argv[1:]:
    for line in open(f):
        kv = dict(re.findall(r'(\w+)=(\S+)', line))
        if 'cpu_us_per_msg' not in kv: continue
        k = (kv['design'], int(kv['rate']))
        rows[k].append(float(kv['cpu_us_per_msg']))
        extra[k].append((kv.get('delivered'), kv.get('msgs'), kv.get('vcsw_per_msg'), kv.get('failures','0'), kv.get('late','-'), kv.get('wall_s','-'), kv.get('utime_s'), kv.get('stime_s')))
print("| design | rate | n | median µs/msg | range | vcsw/msg (med) | delivered/sent (min) | user/sys s (last) |")
print("|---|---:|---:|---:|---|---:|---|---|")
for k in sorted(rows, key=lambda k:(k[1], k[0])):
    v = rows[k]; e = extra[k]
    vc = statistics.median(float(x[2]) for x in e)
    dl = [x for x in e if x[0] not in (None,'-','')]
    dstr = min(f"{int(x[0])}/{x[1]}" for x in dl) if dl else '-'
    print(f"| {k[0]} | {k[1]} | {len(v)} | {statistics.median(v):.2f} | {min(v):.2f}–{max(v):.2f} | {vc:.2f} | {dstr} | {e[-1][6]}/{e[-1][7]} |")
