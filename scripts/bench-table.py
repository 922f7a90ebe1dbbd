import json, glob, os, sys, statistics
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(out + '/*.json')):
    name = os.path.basename(f)[:-5]
    store, scen, pair, which = name.split('_')
    d = json.load(open(f))
    r = d['results']
    send = next((p for p in d['phases'] if p['name'].startswith('send') or p['name'].endswith(' send')), None)
    rec = dict(rate=r.get('send_msgs_per_s'), put=r.get('put_latency_ms', {}), dl=r.get('delivery_latency_ms') or {},
               undeliv=r.get('pairs_undelivered'), dup=r.get('duplicate_deliveries'), cpu=send and send['server_cpu_s'],
               msgs=r.get('send_ok') or (r.get('send_msgs_per_s') and r.get('send_wall_s') and round(r['send_msgs_per_s'] * r['send_wall_s'])), load=d['loadavg_start'].split()[0], hwm=d['server']['peak_rss_kib']/1024)
    rows[(store, scen, pair, which)] = rec
print("| store | scenario | pair | build | load | send msg/s | PUT p50 / p99 ms | delivery p50 / p99 ms | server CPU ms/msg (send phase) | undelivered | dup | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
ratios = {}
for k in sorted(rows):
    v = rows[k]
    dl = v['dl']
    dls = f"{dl.get('p50',0):.1f} / {dl.get('p99',0):.1f}" if dl else "—"
    cpu = v['cpu'] * 1000 / v['msgs'] if v['cpu'] and v['msgs'] else 0
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {v['load']} | {v['rate']:.1f} | {v['put'].get('p50',0):.1f} / {v['put'].get('p99',0):.1f} | {dls} | {cpu:.2f} | {v['undeliv'] if v['undeliv'] is not None else '—'} | {v['dup'] if v['dup'] is not None else '—'} | {v['hwm']:.0f} |")
print()
print("| store | scenario | after/before send rate (per pair) | median | after/before delivery p99 (per pair) | median | after/before server CPU per message (per pair) | median |")
print("|---|---|---|---|---|---|---|---|")
def cpum(v):
    return v['cpu'] / v['msgs'] if v['cpu'] and v['msgs'] else 0
for store in ('sqlite', 'pg'):
    for scen in ('fanout', 'serial'):
        rr, pr, cr = [], [], []
        for pair in sorted({k[2] for k in rows}):
            b, a = rows.get((store, scen, pair, 'before')), rows.get((store, scen, pair, 'after'))
            if not a or not b: continue
            rr.append(a['rate'] / b['rate'])
            if a['dl'] and b['dl']: pr.append(a['dl']['p99'] / b['dl']['p99'])
            if cpum(a) and cpum(b): cr.append(cpum(a) / cpum(b))
        if rr:
            print(f"| {store} | {scen} | {', '.join(f'{x:.2f}' for x in rr)} | {statistics.median(rr):.2f} | {', '.join(f'{x:.2f}' for x in pr) or '—'} | {statistics.median(pr) if pr else 0:.2f} | {', '.join(f'{x:.2f}' for x in cr) or '—'} | {statistics.median(cr) if cr else 0:.2f} |")
