#!/usr/bin/env python3
"""Writes the Grafana dashboards in this directory from one description, so
every dashboard follows the same conventions (grafana/dashboard-linter's
rules, applied by hand):

- a `datasource` variable (type datasource, Prometheus) used by every panel
  and variable: works through import and through file provisioning, unlike
  `${DS_PROMETHEUS}` inputs that break under provisioning (grafana #10786);
- `job` and `instance` variables, and `job=~"$job", instance=~"$instance"`
  in every query; no hard-coded job name;
- `$__rate_interval` in every rate()/increase() range;
- a unit and a description on every panel; a stable `uid` (<= 40 chars) so
  provisioning updates in place;
- deployment annotations (Grafana annotations tagged `deploy`, posted by
  `steward annotate deploy`) on every dashboard; the backups dashboard also
  shows Steward's own backup/restore/drill annotations.

Run `python3 dashboards/generate.py` after editing; `--check` exits 1 when a
committed JSON file differs from what this script writes (the test suite
runs it).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEL = 'job=~"$job", instance=~"$instance"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr, legend="", ref="A", instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def panel(title, description, unit, exprs, kind="timeseries", w=12, h=8, **opts):
    """exprs: list of (expr, legend)."""
    targets = [target(e, l, chr(ord("A") + i), instant=(kind in ("stat", "table", "bargauge")))
               for i, (e, l) in enumerate(exprs)]
    defaults = {"unit": unit}
    if "min" in opts:
        defaults["min"] = opts["min"]
    if "max" in opts:
        defaults["max"] = opts["max"]
    if "thresholds" in opts:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in opts["thresholds"]],
        }
    if "mappings" in opts:
        defaults["mappings"] = opts["mappings"]
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": False}
        if opts.get("stack"):
            defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": targets,
        "_w": w,
        "_h": h,
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        p["options"] = {"colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "textMode": "auto"}
    return p


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_w": 24, "_h": 1}


UP_MAPPING = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                            "1": {"text": "UP", "color": "green"}}}]
OK_MAPPING = [{"type": "value", "options": {"0": {"text": "FAILED", "color": "red"},
                                            "1": {"text": "OK", "color": "green"}}}]


def layout(panels):
    x = y = 0
    line_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if p["type"] == "row" or x + w > 24:
            x = 0
            y += line_h
            line_h = 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        out.append(p)
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x = 0
            y += h
            line_h = 0
    return out


def dashboard(uid, title, description, var_metric, panels, tags, extra_annotations=()):
    annotations = [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "iconColor": "#8AB8FF",
            "name": "Deployments",
            "target": {"type": "tags", "tags": ["deploy"], "limit": 100, "matchAny": False},
        },
    ]
    for name, tag, color in extra_annotations:
        annotations.append({
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "iconColor": color,
            "name": name,
            "target": {"type": "tags", "tags": ["steward", tag], "limit": 100, "matchAny": False},
        })
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["steward"] + tags,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": annotations},
        "links": [{"title": "Steward dashboards", "type": "dashboards", "tags": ["steward"],
                   "asDropdown": True, "includeVars": True, "keepTime": True}],
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
            },
            {
                "name": "job",
                "label": "Job",
                "type": "query",
                "datasource": DS,
                "query": {"query": f"label_values({var_metric}, job)", "refId": "job"},
                "definition": f"label_values({var_metric}, job)",
                "includeAll": True,
                "multi": True,
                "allValue": ".+",
                "current": {},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            },
            {
                "name": "instance",
                "label": "Instance",
                "type": "query",
                "datasource": DS,
                "query": {"query": f'label_values({var_metric}{{job=~"$job"}}, instance)', "refId": "instance"},
                "definition": f'label_values({var_metric}{{job=~"$job"}}, instance)',
                "includeAll": True,
                "multi": True,
                "allValue": ".+",
                "current": {},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            },
        ]},
        "panels": layout(panels),
    }


FS = 'fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs|devtmpfs|fuse\\\\..*"'

HOST = dashboard(
    "steward-host", "Steward / Host overview",
    "Infrastructure health of hosts running Steward: CPU, memory, disk, network and load, from Steward's node_* metrics (node_exporter's names).",
    "node_uname_info",
    [
        row("Overview"),
        panel("CPU busy", "Share of CPU time not idle, all CPUs.", "percentunit",
              [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", {SEL}}}[$__rate_interval]))', "{{instance}}")],
              kind="stat", w=6, h=4, min=0, max=1, thresholds=[(None, "green"), (0.8, "orange"), (0.95, "red")]),
        panel("Memory used", "1 - MemAvailable / MemTotal. Alerts: 85% warning, 95% critical.", "percentunit",
              [(f'1 - node_memory_MemAvailable_bytes{{{SEL}}} / node_memory_MemTotal_bytes{{{SEL}}}', "{{instance}}")],
              kind="stat", w=6, h=4, min=0, max=1, thresholds=[(None, "green"), (0.85, "orange"), (0.95, "red")]),
        panel("Fullest filesystem", "Used share of the fullest real filesystem. Alerts: 85% warning, 95% critical.", "percentunit",
              [(f'max by (instance) (1 - node_filesystem_avail_bytes{{{FS}, {SEL}}} / node_filesystem_size_bytes{{{FS}, {SEL}}})', "{{instance}}")],
              kind="stat", w=6, h=4, min=0, max=1, thresholds=[(None, "green"), (0.85, "orange"), (0.95, "red")]),
        panel("Uptime", "Time since the host booted.", "s",
              [(f'node_time_seconds{{{SEL}}} - node_boot_time_seconds{{{SEL}}}', "{{instance}}")],
              kind="stat", w=6, h=4),
        row("CPU and load"),
        panel("CPU usage by mode", "CPU seconds per second by mode, summed over CPUs (1 = one core busy).", "short",
              [(f'sum by (instance, mode) (rate(node_cpu_seconds_total{{mode!="idle", {SEL}}}[$__rate_interval]))', "{{instance}} {{mode}}")],
              stack=True),
        panel("Load per CPU", "Load averages divided by the number of CPUs. Alert: 15-minute load above 2 per CPU.", "short",
              [(f'node_load1{{{SEL}}} / on (job, instance) count by (job, instance) (node_cpu_seconds_total{{mode="idle", {SEL}}})', "{{instance}} 1m"),
               (f'node_load15{{{SEL}}} / on (job, instance) count by (job, instance) (node_cpu_seconds_total{{mode="idle", {SEL}}})', "{{instance}} 15m")]),
        panel("Processes", "Processes running and blocked on I/O.", "short",
              [(f'node_procs_running{{{SEL}}}', "{{instance}} running"),
               (f'node_procs_blocked{{{SEL}}}', "{{instance}} blocked")]),
        panel("Context switches and forks", "Per second.", "ops",
              [(f'rate(node_context_switches_total{{{SEL}}}[$__rate_interval])', "{{instance}} context switches"),
               (f'rate(node_forks_total{{{SEL}}}[$__rate_interval])', "{{instance}} forks")]),
        row("Memory"),
        panel("Memory", "Total, available and the main consumers (from /proc/meminfo).", "bytes",
              [(f'node_memory_MemTotal_bytes{{{SEL}}}', "{{instance}} total"),
               (f'node_memory_MemAvailable_bytes{{{SEL}}}', "{{instance}} available"),
               (f'node_memory_Cached_bytes{{{SEL}}} + node_memory_Buffers_bytes{{{SEL}}}', "{{instance}} cache+buffers"),
               (f'node_memory_SwapTotal_bytes{{{SEL}}} - node_memory_SwapFree_bytes{{{SEL}}}', "{{instance}} swap used")]),
        panel("Memory used share", "1 - MemAvailable / MemTotal over time.", "percentunit",
              [(f'1 - node_memory_MemAvailable_bytes{{{SEL}}} / node_memory_MemTotal_bytes{{{SEL}}}', "{{instance}}")],
              min=0, max=1, thresholds=[(None, "green"), (0.85, "orange"), (0.95, "red")]),
        row("Disk"),
        panel("Filesystem used", "Used share per real filesystem (tmpfs, overlay and similar excluded).", "percentunit",
              [(f'1 - node_filesystem_avail_bytes{{{FS}, {SEL}}} / node_filesystem_size_bytes{{{FS}, {SEL}}}', "{{instance}} {{mountpoint}}")],
              min=0, max=1),
        panel("Filesystem free", "Bytes available to unprivileged users per filesystem.", "bytes",
              [(f'node_filesystem_avail_bytes{{{FS}, {SEL}}}', "{{instance}} {{mountpoint}}")]),
        panel("Disk throughput", "Bytes read and written per second per device.", "Bps",
              [(f'rate(node_disk_read_bytes_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} read"),
               (f'rate(node_disk_written_bytes_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} write")]),
        panel("Disk IOPS", "Read and write operations completed per second per device.", "iops",
              [(f'rate(node_disk_reads_completed_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} reads"),
               (f'rate(node_disk_writes_completed_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} writes")]),
        panel("Disk busy", "Share of time the device had I/O in flight (saturation near 100%).", "percentunit",
              [(f'rate(node_disk_io_time_seconds_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}}")],
              min=0, max=1),
        panel("Inodes free", "Share of free inodes per filesystem. Alert below 10%.", "percentunit",
              [(f'node_filesystem_files_free{{{FS}, {SEL}}} / node_filesystem_files{{{FS}, {SEL}}}', "{{instance}} {{mountpoint}}")],
              min=0, max=1),
        row("Network"),
        panel("Network throughput", "Bytes received and transmitted per second per interface (loopback excluded).", "Bps",
              [(f'rate(node_network_receive_bytes_total{{device!="lo", {SEL}}}[$__rate_interval])', "{{instance}} {{device}} in"),
               (f'rate(node_network_transmit_bytes_total{{device!="lo", {SEL}}}[$__rate_interval])', "{{instance}} {{device}} out")]),
        panel("Network errors and drops", "Receive/transmit errors and drops per second.", "pps",
              [(f'rate(node_network_receive_errs_total{{{SEL}}}[$__rate_interval]) + rate(node_network_transmit_errs_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} errors"),
               (f'rate(node_network_receive_drop_total{{{SEL}}}[$__rate_interval]) + rate(node_network_transmit_drop_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{device}} drops")]),
        row("System"),
        panel("File descriptors", "Allocated vs maximum kernel file handles. Alert above 90%.", "short",
              [(f'node_filefd_allocated{{{SEL}}}', "{{instance}} allocated"),
               (f'node_filefd_maximum{{{SEL}}}', "{{instance}} maximum")]),
        panel("Clock offset", "Offset reported by the kernel's clock discipline (adjtimex). Alert beyond 50 ms.", "s",
              [(f'node_timex_offset_seconds{{{SEL}}}', "{{instance}}")]),
    ],
    ["host", "node"],
)

NGINX = dashboard(
    "steward-nginx", "Steward / Application overview (nginx)",
    "Application overview: request rate, error rate and latency from Steward's access-log metrics (steward_http_*), nginx connections from stub_status, and endpoint probes.",
    "nginx_up",
    [
        row("Requests (access log)"),
        panel("Request rate", "Requests per second in each access-log source, from Steward's access-log metrics.", "reqps",
              [(f'sum by (instance, source) (rate(steward_http_requests_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")]),
        panel("Responses by status class", "Requests per second by status class (2xx, 3xx, 4xx, 5xx).", "reqps",
              [(f'sum by (instance) (rate(steward_http_requests_total{{status=~"{c}..", {SEL}}}[$__rate_interval]))', f"{{{{instance}}}} {c}xx")
               for c in "2345"],
              stack=True),
        panel("5xx error rate", "Share of requests answered 5xx. Alerts: 5% warning, 50% critical (application down).", "percentunit",
              [(f'sum by (instance, source) (rate(steward_http_requests_total{{status=~"5..", {SEL}}}[$__rate_interval])) / sum by (instance, source) (rate(steward_http_requests_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")],
              min=0, thresholds=[(None, "green"), (0.05, "orange"), (0.5, "red")]),
        panel("Latency p50 / p95 / p99", "Request time ($request_time) quantiles from the access-log histogram. Alert: p95 above 2 s.", "s",
              [(f'histogram_quantile(0.5, sum by (instance, source, le) (rate(steward_http_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{instance}} {{source}} p50"),
               (f'histogram_quantile(0.95, sum by (instance, source, le) (rate(steward_http_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{instance}} {{source}} p95"),
               (f'histogram_quantile(0.99, sum by (instance, source, le) (rate(steward_http_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{instance}} {{source}} p99")]),
        panel("Upstream (PHP) latency p95", "95th percentile of $upstream_response_time: the time PHP-FPM took.", "s",
              [(f'histogram_quantile(0.95, sum by (instance, source, le) (rate(steward_http_upstream_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{instance}} {{source}}")]),
        panel("Response bytes", "Response body bytes sent per second ($body_bytes_sent).", "Bps",
              [(f'sum by (instance, source) (rate(steward_http_response_body_bytes_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")]),
        row("nginx (stub_status)"),
        panel("nginx up", "1 when Steward reads nginx's stub_status.", "none",
              [(f'nginx_up{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4, mappings=UP_MAPPING),
        panel("Active connections", "Client connections open now.", "short",
              [(f'nginx_connections_active{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4),
        panel("Requests per second (stub_status)", "All requests nginx served, whatever the status.", "reqps",
              [(f'rate(nginx_http_requests_total{{{SEL}}}[$__rate_interval])', "{{instance}}")], w=12, h=4),
        panel("Connection states", "Reading, writing and waiting (keep-alive) connections.", "short",
              [(f'nginx_connections_reading{{{SEL}}}', "{{instance}} reading"),
               (f'nginx_connections_writing{{{SEL}}}', "{{instance}} writing"),
               (f'nginx_connections_waiting{{{SEL}}}', "{{instance}} waiting")], stack=True),
        panel("Accepted vs handled connections", "Per second; handled below accepted means nginx hit a resource limit (worker_connections).", "cps",
              [(f'rate(nginx_connections_accepted{{{SEL}}}[$__rate_interval])', "{{instance}} accepted"),
               (f'rate(nginx_connections_handled{{{SEL}}}[$__rate_interval])', "{{instance}} handled")]),
        row("Probes"),
        panel("Probe success", "1 when the endpoint answered as expected. Alert: ApplicationDown after 2 minutes at 0.", "none",
              [(f'probe_success{{{SEL}}}', "{{probe}}")], kind="stat", w=8, h=4, mappings=OK_MAPPING),
        panel("Probe duration", "Time the whole probe took.", "s",
              [(f'probe_duration_seconds{{{SEL}}}', "{{probe}}")], w=8, h=4),
        panel("TLS certificate expiry", "Days until the earliest certificate of each probe expires. Alerts: 7 days warning, 3 days critical.", "d",
              [(f'(probe_ssl_earliest_cert_expiry{{{SEL}}} - time()) / 86400', "{{probe}}")],
              kind="stat", w=8, h=4, thresholds=[(None, "red"), (3, "orange"), (7, "green")]),
    ],
    ["nginx", "application"],
)

PHPFPM = dashboard(
    "steward-phpfpm", "Steward / PHP-FPM",
    "PHP-FPM pools: processes, listen queue, max children reached, accepted connections and slow requests (hipages php-fpm_exporter names).",
    "phpfpm_up",
    [
        panel("Pool up", "1 when Steward reads the pool's status page.", "none",
              [(f'phpfpm_up{{{SEL}}}', "{{pool}}")], kind="stat", w=8, h=4, mappings=UP_MAPPING),
        panel("Max children reached", "Times the pool hit pm.max_children in the range: requests waited for a worker.", "short",
              [(f'increase(phpfpm_max_children_reached{{{SEL}}}[$__rate_interval])', "{{pool}}")], w=8, h=4),
        panel("Listen queue", "Requests waiting for a free worker, and the backlog size.", "short",
              [(f'phpfpm_listen_queue{{{SEL}}}', "{{pool}} waiting"),
               (f'phpfpm_listen_queue_length{{{SEL}}}', "{{pool}} backlog")], w=8, h=4),
        panel("Processes", "Active and idle workers per pool; active at the total means saturation.", "short",
              [(f'phpfpm_active_processes{{{SEL}}}', "{{pool}} active"),
               (f'phpfpm_idle_processes{{{SEL}}}', "{{pool}} idle"),
               (f'phpfpm_total_processes{{{SEL}}}', "{{pool}} total")]),
        panel("Accepted connections", "Requests per second accepted by each pool.", "reqps",
              [(f'rate(phpfpm_accepted_connections{{{SEL}}}[$__rate_interval])', "{{pool}}")]),
        panel("Slow requests", "Requests slower than request_slowlog_timeout, per second.", "reqps",
              [(f'rate(phpfpm_slow_requests{{{SEL}}}[$__rate_interval])', "{{pool}}")]),
        panel("Max active processes", "Highest number of active workers since the pool started.", "short",
              [(f'phpfpm_max_active_processes{{{SEL}}}', "{{pool}}")]),
    ],
    ["php-fpm"],
)

MYSQL = dashboard(
    "steward-mysql", "Steward / MySQL",
    "Database performance for MySQL/MariaDB: query rate, slow queries, connections, InnoDB, replication (mysqld_exporter names).",
    "mysql_up",
    [
        panel("MySQL up", "1 when Steward can query the server.", "none",
              [(f'mysql_up{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4, mappings=UP_MAPPING),
        panel("Uptime", "Time since the server started.", "s",
              [(f'mysql_global_status_uptime{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4),
        panel("Queries per second", "Statements executed by clients (Questions).", "qps",
              [(f'rate(mysql_global_status_questions{{{SEL}}}[$__rate_interval])', "{{instance}}")], w=12, h=4),
        panel("Connections", "Connected and running threads against max_connections. Alert above 80%.", "short",
              [(f'mysql_global_status_threads_connected{{{SEL}}}', "{{instance}} connected"),
               (f'mysql_global_status_threads_running{{{SEL}}}', "{{instance}} running"),
               (f'mysql_global_variables_max_connections{{{SEL}}}', "{{instance}} max")]),
        panel("Slow queries", "Queries slower than long_query_time, per second.", "qps",
              [(f'rate(mysql_global_status_slow_queries{{{SEL}}}[$__rate_interval])', "{{instance}}")]),
        panel("Commands", "Top statement types per second.", "ops",
              [(f'topk(8, rate(mysql_global_status_commands_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{command}}")]),
        panel("InnoDB row operations", "Rows read, inserted, updated, deleted per second.", "ops",
              [(f'rate(mysql_global_status_innodb_row_ops_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{operation}}")]),
        panel("Buffer pool pages", "InnoDB buffer pool pages by state.", "short",
              [(f'mysql_global_status_buffer_pool_pages{{{SEL}}}', "{{instance}} {{state}}")], stack=True),
        panel("Network traffic", "Bytes received from and sent to clients per second.", "Bps",
              [(f'rate(mysql_global_status_bytes_received{{{SEL}}}[$__rate_interval])', "{{instance}} received"),
               (f'rate(mysql_global_status_bytes_sent{{{SEL}}}[$__rate_interval])', "{{instance}} sent")]),
        panel("Temporary tables on disk", "Implicit temporary tables written to disk per second (missing indexes, large sorts).", "ops",
              [(f'rate(mysql_global_status_created_tmp_disk_tables{{{SEL}}}[$__rate_interval])', "{{instance}}")]),
        panel("Replication lag", "Seconds_Behind_Master of replicas. Alert above 30 s.", "s",
              [(f'mysql_slave_status_seconds_behind_master{{{SEL}}}', "{{instance}} from {{master_host}}")]),
    ],
    ["mysql", "database"],
)

POSTGRES = dashboard(
    "steward-postgres", "Steward / PostgreSQL",
    "Database performance for PostgreSQL: connections, transactions, tuples, cache hit ratio, deadlocks, sizes, replication (postgres_exporter names).",
    "pg_up",
    [
        panel("PostgreSQL up", "1 when Steward can query the server.", "none",
              [(f'pg_up{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4, mappings=UP_MAPPING),
        panel("Uptime", "Time since the postmaster started.", "s",
              [(f'time() - pg_postmaster_start_time_seconds{{{SEL}}}', "{{instance}}")], kind="stat", w=6, h=4),
        panel("Transactions per second", "Commits and rollbacks per second, all databases.", "ops",
              [(f'sum by (instance) (rate(pg_stat_database_xact_commit{{{SEL}}}[$__rate_interval]))', "{{instance}} commit"),
               (f'sum by (instance) (rate(pg_stat_database_xact_rollback{{{SEL}}}[$__rate_interval]))', "{{instance}} rollback")], w=12, h=4),
        panel("Connections", "Backends by state against max_connections. Alert above 80%.", "short",
              [(f'sum by (instance, state) (pg_stat_activity_count{{{SEL}}})', "{{instance}} {{state}}"),
               (f'pg_settings_max_connections{{{SEL}}}', "{{instance}} max")]),
        panel("Tuples", "Rows fetched, inserted, updated, deleted per second.", "ops",
              [(f'sum by (instance) (rate(pg_stat_database_tup_fetched{{{SEL}}}[$__rate_interval]))', "{{instance}} fetched"),
               (f'sum by (instance) (rate(pg_stat_database_tup_inserted{{{SEL}}}[$__rate_interval]))', "{{instance}} inserted"),
               (f'sum by (instance) (rate(pg_stat_database_tup_updated{{{SEL}}}[$__rate_interval]))', "{{instance}} updated"),
               (f'sum by (instance) (rate(pg_stat_database_tup_deleted{{{SEL}}}[$__rate_interval]))', "{{instance}} deleted")]),
        panel("Cache hit ratio", "Share of block reads served from shared buffers.", "percentunit",
              [(f'sum by (instance) (rate(pg_stat_database_blks_hit{{{SEL}}}[$__rate_interval])) / (sum by (instance) (rate(pg_stat_database_blks_hit{{{SEL}}}[$__rate_interval])) + sum by (instance) (rate(pg_stat_database_blks_read{{{SEL}}}[$__rate_interval])))', "{{instance}}")],
              min=0, max=1),
        panel("Deadlocks", "Deadlocks detected in the range, per database.", "short",
              [(f'increase(pg_stat_database_deadlocks{{{SEL}}}[$__rate_interval])', "{{instance}} {{datname}}")]),
        panel("Database size", "Size on disk per database.", "bytes",
              [(f'pg_database_size_bytes{{{SEL}}}', "{{instance}} {{datname}}")]),
        panel("Locks", "Locks held by mode.", "short",
              [(f'sum by (instance, mode) (pg_locks_count{{{SEL}}})', "{{instance}} {{mode}}")]),
        panel("Longest transaction", "Age of the oldest open transaction per database and state.", "s",
              [(f'max by (instance, datname) (pg_stat_activity_max_tx_duration{{{SEL}}})', "{{instance}} {{datname}}")]),
        panel("Replication lag", "Replay lag of replicas. Alert above 30 s.", "s",
              [(f'pg_replication_lag_seconds{{{SEL}}} and on (job, instance) pg_replication_is_replica{{{SEL}}} == 1', "{{instance}}")]),
    ],
    ["postgresql", "database"],
)

REDIS = dashboard(
    "steward-redis", "Steward / Redis and job queues",
    "Redis as cache and job queue (redis_exporter 1.45 names): job queue depth per queue and state, cache hit rate, memory against maxmemory, clients, keys and replication. With several [[redis]] targets each series carries `target`.",
    "redis_up",
    [
        panel("Redis up", "1 when Steward can read INFO from the server.", "none",
              [(f'redis_up{{{SEL}}}', "{{instance}} {{target}}")], kind="stat", w=6, h=4, mappings=UP_MAPPING),
        panel("Uptime", "Time since redis-server started (a restart empties a cache without persistence).", "s",
              [(f'redis_uptime_in_seconds{{{SEL}}}', "{{instance}} {{target}}")], kind="stat", w=6, h=4),
        panel("Commands per second", "Commands the server processed per second.", "ops",
              [(f'rate(redis_commands_processed_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{target}}")], w=12, h=4),
        row("Job queues"),
        panel("Ready jobs per queue", "Jobs waiting for a worker (the list of the queue). Alert above 1000 for 5 minutes.", "short",
              [(f'steward_queue_jobs{{state="ready", {SEL}}}', "{{instance}} {{queue}}")],
              thresholds=[(None, "green"), (1000, "orange")]),
        panel("Jobs per queue and state", "Ready, delayed (not due yet) and reserved (taken by a worker) jobs per queue.", "short",
              [(f'steward_queue_jobs{{{SEL}}}', "{{instance}} {{queue}} {{state}}")]),
        panel("Oldest delayed job overdue", "How long ago the oldest delayed job of each queue fell due (0: none due). Workers move due jobs within seconds; alert above 5 minutes for 5 minutes.", "s",
              [(f'steward_queue_oldest_delayed_job_overdue_seconds{{{SEL}}}', "{{instance}} {{queue}}")],
              thresholds=[(None, "green"), (300, "orange")]),
        row("Cache"),
        panel("Cache hit rate", "Share of key lookups that found the key. Alert below 80% under traffic.", "percentunit",
              [(f'rate(redis_keyspace_hits_total{{{SEL}}}[$__rate_interval]) / (rate(redis_keyspace_hits_total{{{SEL}}}[$__rate_interval]) + rate(redis_keyspace_misses_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{target}}")],
              min=0, max=1),
        panel("Evicted and expired keys", "Keys removed per second: evicted under maxmemory (data loss for queues and sessions) and expired by TTL.", "short",
              [(f'rate(redis_evicted_keys_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{target}} evicted"),
               (f'rate(redis_expired_keys_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{target}} expired")]),
        panel("Memory", "Memory used by the data set against maxmemory (0 = no limit). Alert above 90%.", "bytes",
              [(f'redis_memory_used_bytes{{{SEL}}}', "{{instance}} {{target}} used"),
               (f'redis_memory_max_bytes{{{SEL}}}', "{{instance}} {{target}} maxmemory")]),
        panel("Keys per database", "Keys in each database.", "short",
              [(f'redis_db_keys{{{SEL}}}', "{{instance}} {{target}} {{db}}")]),
        row("Clients and replication"),
        panel("Clients", "Connected and blocked (BLPOP workers) clients, and connections refused at maxclients per second.", "short",
              [(f'redis_connected_clients{{{SEL}}}', "{{instance}} {{target}} connected"),
               (f'redis_blocked_clients{{{SEL}}}', "{{instance}} {{target}} blocked"),
               (f'rate(redis_rejected_connections_total{{{SEL}}}[$__rate_interval])', "{{instance}} {{target}} rejected/s")]),
        panel("Replication", "Replicas connected to a master; on a replica, whether its link to the master is up (alert when down).", "short",
              [(f'redis_connected_slaves{{{SEL}}}', "{{instance}} {{target}} replicas"),
               (f'redis_master_link_up{{{SEL}}}', "{{instance}} {{target}} link up")]),
    ],
    ["redis", "queue"],
)

def binlog_panels():
    """MySQL/MariaDB binlog shipping (point-in-time recovery): is the
    follower connected, how far behind the newest shipped event is, gaps
    and failures, and the volume shipped."""
    return [
        row("Binlog shipping (MySQL/MariaDB point-in-time recovery)"),
        panel("Following", "1 while the binlog follower is connected to the server. Alert after 5 minutes at 0.", "none",
              [(f'steward_binlog_following{{{SEL}}}', "{{exported_job}}")], kind="stat", w=12, h=5, mappings=OK_MAPPING),
        panel("Last shipped", "Time since the last binlog segment was stored on every target of the job (a quiet server ships nothing new: compare with the lag).", "s",
              [(f'time() - steward_binlog_last_shipped_timestamp_seconds{{{SEL}}}', "{{exported_job}}")], kind="stat", w=12, h=5),
        panel("Gaps and shipping failures", "Binlogs purged on the server before they were shipped (each answered by a fresh full dump, reason binlog-gap; alerted), and times shipping stopped on an error (server unreachable, missing grant, target down; retried), per interval.", "short",
              [(f'increase(steward_binlog_gaps_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} gaps"),
               (f'increase(steward_binlog_ship_failures_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} failures")]),
        panel("Shipping lag", "Seconds since everything received from the server was shipped (what a restore now would lose), Alert above 10 minutes.", "s",
              [(f'steward_binlog_lag_seconds{{{SEL}}}', "{{exported_job}}")],
              thresholds=[(None, "green"), (60, "orange"), (600, "red")]),
        panel("Binlog volume", "Binlog bytes shipped per second (plaintext) and stored per second per target (compressed and encrypted).", "Bps",
              [(f'rate(steward_binlog_shipped_bytes_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} shipped"),
               (f'rate(steward_binlog_stored_bytes_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} stored")]),
        panel("Waiting to ship", "Binlog bytes received from the server and not shipped yet (shipped at least every flush interval, or at 16 MiB).", "bytes",
              [(f'steward_binlog_unshipped_bytes{{{SEL}}}', "{{exported_job}}")]),
    ]


def wal_stream_panels():
    """PostgreSQL WAL streaming (`postgres_pitr` jobs with `streaming = true`)."""
    return [
        row("PostgreSQL WAL streaming"),
        panel("WAL held by the replication slot",
              "WAL the server keeps for Steward's receiver (pg_current_wal_lsn() - restart_lsn). It grows while the agent is down or behind; alert above 1 GiB for 10 minutes. Bound it on the server with max_slot_wal_keep_size.",
              "bytes",
              [(f'steward_wal_stream_slot_retained_bytes{{{SEL}}}', "{{exported_job}} slot {{slot}}")],
              thresholds=[(None, "green"), (536870912, "orange"), (1073741824, "red")]),
        panel("Streaming", "1 while pg_receivewal holds the job's slot.", "none",
              [(f'steward_wal_stream_up{{{SEL}}}', "{{exported_job}}")], kind="stat", w=6, mappings=OK_MAPPING),
        panel("Last WAL received", "Time since the received WAL position last moved (grows on a quiet server too).", "s",
              [(f'time() - steward_wal_stream_last_received_timestamp_seconds{{{SEL}}}', "{{exported_job}}")], kind="stat", w=6),
        panel("Streaming lag", "Seconds since everything received was on every target: the RPO beyond the receiver. Alert above 60 s for 5 minutes.", "s",
              [(f'steward_wal_stream_lag_seconds{{{SEL}}}', "{{exported_job}}")]),
        panel("Streamed WAL and stored bytes", "Per second: WAL shipped as deltas of the open segment, and bytes stored (compressed and encrypted, deltas and complete segments, all targets).", "Bps",
              [(f'rate(steward_wal_stream_delta_bytes_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} WAL"),
               (f'rate(steward_wal_stream_stored_bytes_total{{{SEL}}}[$__rate_interval])', "{{exported_job}} stored")]),
    ]


BACKUPS = dashboard(
    "steward-backups", "Steward / Backups and drills",
    "Backup freshness, results, durations and sizes per job, and disaster-recovery drills. Steward's `job` label is stored by Prometheus as `exported_job`. Backup failures, restores and drills show as annotations.",
    "steward_build_info",
    [
        panel("Last successful backup age", "Time since each job's newest snapshot was committed, per target.", "s",
              [(f'time() - steward_backup_last_success_timestamp_seconds{{{SEL}}}', "{{exported_job}} → {{target}}")],
              kind="stat", w=12, h=5),
        panel("Last run", "Result of each job's last run.", "none",
              [(f'steward_backup_last_run_success{{{SEL}}}', "{{exported_job}}")],
              kind="stat", w=12, h=5, mappings=OK_MAPPING),
        panel("Runs by result", "Runs per job and result in the range.", "short",
              [(f'sum by (exported_job, result) (increase(steward_backup_runs_total{{{SEL}}}[$__rate_interval]))', "{{exported_job}} {{result}}")]),
        panel("Duration of the last run", "Seconds the job's last run took.", "s",
              [(f'steward_backup_duration_seconds{{{SEL}}}', "{{exported_job}}")]),
        panel("Size of the last run", "Plaintext read (source) and compressed+encrypted stored bytes.", "bytes",
              [(f'steward_backup_size_bytes{{{SEL}}}', "{{exported_job}} {{stage}}")]),
        panel("Compression ratio", "Stored bytes / source bytes of the last run.", "percentunit",
              [(f'steward_backup_size_bytes{{stage="stored", {SEL}}} / ignoring (stage) steward_backup_size_bytes{{stage="source", {SEL}}}', "{{exported_job}}")]),
        panel("Missed scheduled runs", "Scheduled runs that did not happen (agent down, previous run still going).", "short",
              [(f'increase(steward_backup_missed_runs_total{{{SEL}}}[$__rate_interval])', "{{exported_job}}")]),
        panel("Next run", "Time until each job is next due.", "s",
              [(f'steward_backup_next_run_timestamp_seconds{{{SEL}}} - time()', "{{exported_job}}")], kind="stat"),
        row("Drills"),
        panel("Drill result", "Result of each job's last disaster-recovery drill (restore, checks, RTO/RPO).", "none",
              [(f'steward_drill_success{{{SEL}}}', "{{exported_job}}")], kind="stat", w=8, h=5, mappings=OK_MAPPING),
        panel("Last drill age", "Time since each job's last drill. Alert after 35 days.", "s",
              [(f'time() - steward_drill_last_run_timestamp_seconds{{{SEL}}}', "{{exported_job}}")], kind="stat", w=8, h=5),
        panel("Drill restore time (RTO)", "Seconds the last drill took to restore and check the latest snapshot (the measured RTO).", "s",
              [(f'steward_drill_restore_seconds{{{SEL}}}', "{{exported_job}}")], w=12, h=6),
        panel("Drill data age (RPO)", "Age of the snapshot the last drill restored, when it ran (the measured RPO).", "s",
              [(f'steward_drill_data_age_seconds{{{SEL}}}', "{{exported_job}}")], w=12, h=6),
        *binlog_panels(),
        row("PostgreSQL WAL archive"),
        panel("WAL chain", "Whether every segment from the newest base backup to the newest archived one is on the target (listed every minute). Alert when broken.", "none",
              [(f'steward_wal_chain_ok{{{SEL}}}', "{{exported_job}} → {{target}}")], kind="stat", w=12, h=5, mappings=OK_MAPPING),
        panel("Newest archived WAL age", "Time since the newest WAL segment was stored on the target; on a busy server about archive_timeout, growing while archiving fails.", "s",
              [(f'time() - steward_wal_archive_newest_timestamp_seconds{{{SEL}}}', "{{exported_job}} → {{target}}")], kind="stat", w=12, h=5),
        panel("WAL archive lag", "Age of the oldest WAL file waiting in the async spool (0 when empty): what a restore now would lose. Alert over 15 minutes.", "s",
              [(f'steward_wal_archive_lag_seconds{{{SEL}}}', "{{exported_job}}")], w=8, h=6),
        panel("WAL spool use", "Share of spool_max_bytes the spool holds; when full, archive_command fails and PostgreSQL keeps WAL in pg_wal. Alert over 80%.", "percentunit",
              [(f'steward_wal_spool_bytes{{{SEL}}} / steward_wal_spool_max_bytes{{{SEL}}}', "{{exported_job}}")], w=8, h=6, min=0, max=1),
        panel("WAL archived", "Bytes of WAL per second the agent stored on every target from the spool.", "Bps",
              [(f'rate(steward_wal_archived_bytes_total{{{SEL}}}[$__rate_interval])', "{{exported_job}}")], w=8, h=6),
        *wal_stream_panels(),
    ],
    ["backup"],
    extra_annotations=[("Backup failures", "failure", "red"), ("Restores", "restore", "orange"), ("Drills", "drill", "purple")],
)

DEPLOYMENTS = dashboard(
    "steward-deployments", "Steward / Deployments",
    "Deployment tracking: each deployment (`steward annotate deploy`, tag `deploy`) is a region on every panel, so error rate, latency and resource use before and after it can be compared.",
    "steward_build_info",
    [
        panel("5xx error rate around deployments", "Share of requests answered 5xx, per access-log source.", "percentunit",
              [(f'sum by (instance, source) (rate(steward_http_requests_total{{status=~"5..", {SEL}}}[$__rate_interval])) / sum by (instance, source) (rate(steward_http_requests_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")],
              w=24, min=0, thresholds=[(None, "green"), (0.05, "orange"), (0.5, "red")]),
        panel("p95 latency around deployments", "95th percentile of the request time.", "s",
              [(f'histogram_quantile(0.95, sum by (instance, source, le) (rate(steward_http_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "{{instance}} {{source}}")]),
        panel("Request rate around deployments", "Requests per second.", "reqps",
              [(f'sum by (instance, source) (rate(steward_http_requests_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")]),
        panel("CPU busy around deployments", "Share of CPU time not idle.", "percentunit",
              [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", {SEL}}}[$__rate_interval]))', "{{instance}}")], min=0, max=1),
        panel("Memory used around deployments", "1 - MemAvailable / MemTotal.", "percentunit",
              [(f'1 - node_memory_MemAvailable_bytes{{{SEL}}} / node_memory_MemTotal_bytes{{{SEL}}}', "{{instance}}")], min=0, max=1),
        panel("PHP-FPM active processes around deployments", "Busy workers per pool (a release that leaks or slows shows here).", "short",
              [(f'phpfpm_active_processes{{{SEL}}}', "{{instance}} {{pool}}")]),
        panel("Probe success around deployments", "Health endpoints answering as expected.", "none",
              [(f'probe_success{{{SEL}}}', "{{instance}} {{probe}}")], mappings=OK_MAPPING),
    ],
    ["deployments"],
)

AGENT = dashboard(
    "steward-agent", "Steward / Agent",
    "Steward itself: versions, collector health and scrape durations, resource use, log/trace shipping queue and Grafana annotations.",
    "steward_build_info",
    [
        panel("Versions", "steward_build_info per agent.", "none",
              [(f'steward_build_info{{{SEL}}}', "{{instance}} {{version}} ({{revision}})")], kind="table", w=12, h=5),
        panel("Failing collectors", "Collectors whose last scrape failed (node and Steward's own).", "short",
              [(f'count by (instance) (steward_scrape_collector_success{{{SEL}}} == 0) or count by (instance) (node_scrape_collector_success{{{SEL}}} == 0) or vector(0)', "{{instance}}")],
              kind="stat", w=12, h=5, thresholds=[(None, "green"), (1, "red")]),
        panel("Collector duration", "Seconds each collector took in the last scrape.", "s",
              [(f'node_scrape_collector_duration_seconds{{{SEL}}}', "{{instance}} {{collector}}"),
               (f'steward_scrape_collector_duration_seconds{{{SEL}}}', "{{instance}} {{collector}} {{exported_instance}}")]),
        panel("Collector success", "1 when the collector's last scrape succeeded.", "none",
              [(f'steward_scrape_collector_success{{{SEL}}}', "{{instance}} {{collector}} {{exported_instance}}"),
               (f'node_scrape_collector_success{{{SEL}}}', "{{instance}} {{collector}}")]),
        panel("Resident memory", "Steward's RSS.", "bytes",
              [(f'process_resident_memory_bytes{{{SEL}}}', "{{instance}}")]),
        panel("CPU", "Steward's CPU seconds per second (1 = one core).", "percentunit",
              [(f'rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])', "{{instance}}")]),
        panel("Open file descriptors", "Open vs maximum.", "short",
              [(f'process_open_fds{{{SEL}}}', "{{instance}} open"),
               (f'process_max_fds{{{SEL}}}', "{{instance}} max")]),
        row("Logs and traces"),
        panel("Telemetry queue", "Log records and spans waiting for the OTLP upstream. Alert above 1000 for 15 minutes.", "short",
              [(f'steward_telemetry_queue_items{{{SEL}}}', "{{instance}}")]),
        panel("Telemetry queue on disk", "Bytes of the durable queue's segments.", "bytes",
              [(f'steward_telemetry_queue_bytes{{{SEL}}}', "{{instance}}")]),
        panel("Items sent and dropped", "Per second: acknowledged by the upstream, and lost by reason.", "short",
              [(f'sum by (instance, signal) (rate(steward_telemetry_items_sent_total{{{SEL}}}[$__rate_interval]))', "{{instance}} sent {{signal}}"),
               (f'sum by (instance, reason) (rate(steward_telemetry_dropped_items_total{{{SEL}}}[$__rate_interval]))', "{{instance}} dropped {{reason}}")]),
        panel("Export errors", "Failed export attempts per second by reason.", "short",
              [(f'sum by (instance, reason) (rate(steward_telemetry_export_errors_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{reason}}")]),
        panel("Lines read", "Lines read per second from tailed files.", "short",
              [(f'sum by (instance, source) (rate(steward_telemetry_lines_read_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{source}}")]),
        row("Grafana annotations"),
        panel("Annotations added and failed", "The agent's own annotations (backup failures, restores, drills) in each interval.", "short",
              [(f'sum by (instance, kind) (increase(steward_grafana_annotations_total{{{SEL}}}[$__rate_interval]))', "{{instance}} added {{kind}}"),
               (f'sum by (instance, reason) (increase(steward_grafana_annotation_errors_total{{{SEL}}}[$__rate_interval]))', "{{instance}} failed {{reason}}")], w=24),
    ],
    ["agent"],
)

DASHBOARDS = {
    "host.json": HOST,
    "nginx.json": NGINX,
    "phpfpm.json": PHPFPM,
    "mysql.json": MYSQL,
    "postgres.json": POSTGRES,
    "redis.json": REDIS,
    "backups.json": BACKUPS,
    "deployments.json": DEPLOYMENTS,
    "agent.json": AGENT,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, d in DASHBOARDS.items():
        text = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("out of date (run python3 dashboards/generate.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
