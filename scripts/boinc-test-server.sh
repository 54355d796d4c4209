#!/usr/bin/env bash
# A real BOINC server for the tests (issue #18): build | start | stop | status | env.
#   build   builds the BOINC server, tools and samples/wrapper from ../shared/boinc-src/boinc-*.tar.xz once per
#           machine, cached under $BASE/build/SHA16 (SHA16 = the tarball's sha256, so a new tarball rebuilds).
#   start   builds if needed, then runs docs/deploy.md's steps for a test project with its state under
#           $BASE/test: project user, make_project, its own Apache on 127.0.0.1, the daemons, and the Debian
#           boinc-client as its own instance attached over loopback. Prints KEY=VALUE lines (the env command).
#   stop    stops everything start started, by the PID files under $BASE/test/run.
# BASE is /var/tmp/openastro-boinc (OPENASTRO_TEST_BOINC_HOME), not the checkout's var/: the project user and the
# client's user must execute and read what lives there, and a checkout may sit in a private (0700) directory
# such as a `mktemp -d`. The project's code reaches them as a copy of the checkout's files ($BASE/test/src).
#   status  says what is running (exit 1 unless the client and Apache are).
#   deploy-script   prints docs/deploy.md's ```bash deploy blocks: the deploy script start runs.
#   client-stop, client-start   stop / restart the client alone (its tasks resume from their checkpoints).
# Every process it starts it can stop by PID; nothing binds to anything but 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SRC_DIR=${OPENASTRO_BOINC_SRC_DIR:-$ROOT/../shared/boinc-src}
[ -d "$SRC_DIR" ] || SRC_DIR=/work/shared/boinc-src
log() { echo "boinc-test-server: $*" >&2; }
BASE=${OPENASTRO_TEST_BOINC_HOME:-/var/tmp/openastro-boinc}

tarball() {
  local t; t=$(ls "$SRC_DIR"/boinc-*.tar.xz 2>/dev/null | head -1 || true)
  [ -n "$t" ] || { log "no BOINC source tarball in $SRC_DIR"; exit 2; }
  echo "$t"
}

build_dir() { echo "$BASE/build/$(sha256sum "$(tarball)" | cut -c1-16)"; }

build() {
  local B T; T=$(tarball); B=$(build_dir)
  if [ -f "$B/.built" ]; then echo "$B/boinc"; return 0; fi
  log "building BOINC from $T into $B (about 6 minutes on 2 cores; once per tarball)"
  rm -rf "$B"; mkdir -p "$B"; chmod 0755 "$BASE" "$BASE/build"
  tar -xJf "$T" -C "$B"
  (
    cd "$B/boinc"
    ./_autosetup >"$B/autosetup.log" 2>&1
    ./configure --disable-client --disable-manager --enable-server --enable-boinczip >"$B/configure.log" 2>&1 \
      || { tail -20 "$B/configure.log" >&2; exit 1; }
    # make -j2 from a fresh tree once raced (cannot find ../lib/.libs/libboinc.a): a serial make finishes it.
    make -j2 >"$B/make.log" 2>&1 || make >>"$B/make.log" 2>&1 || { tail -30 "$B/make.log" >&2; exit 1; }
    make -C samples/wrapper WRAPPER_RELEASE_VERSION=26019 >"$B/wrapper.log" 2>&1 \
      || { tail -30 "$B/wrapper.log" >&2; exit 1; }
  )
  ls "$B"/boinc/samples/wrapper/wrapper_26019_* >/dev/null
  chmod -R a+rX "$B"
  touch "$B/.built"
  echo "$B/boinc"
}


# The checkout's files (tracked and untracked, not ignored) copied to $1, readable by every user: the project's
# venv installs from there, so the daemons never need to enter the checkout.
copy_source() {
  local dest=$1
  rm -rf "$dest"; mkdir -p "$dest"
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z -co --exclude-standard | xargs -0 -r stat --printf='%n\0' 2>/dev/null \
      | tar --null -T - -cf -) | tar -xf - -C "$dest"
  else
    (cd "$ROOT" && tar --exclude=./var --exclude=./.venv --exclude=./build --exclude=./dist -cf - .) | tar -xf - -C "$dest"
  fi
  chmod -R a+rX "$dest"
}

# --- the test project -----------------------------------------------------------------------------------
VAR=$BASE/test
RUN=$VAR/run
PROJECT=${OPENASTRO_TEST_BOINC_PROJECT:-oatest}
PROJECT_USER=${OPENASTRO_TEST_BOINC_USER:-boincadm}
CLIENT_USER=boinc                      # the Debian boinc-client's own system user
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stop the process whose PID is in file $1 (TERM, then KILL after $2 seconds).
stop_pidfile() {
  local f=$1 grace=${2:-15} pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

as_user() {  # as_user USER CMD...: run CMD as USER (exec, so a PID taken of it is the program's own)
  local u=$1; shift
  setpriv --reuid="$u" --regid="$u" --init-groups \
    env -i HOME="$(getent passwd "$u" | cut -d: -f6)" USER="$u" LOGNAME="$u" LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}

# The deploy steps are docs/deploy.md's ```bash deploy blocks, run as they are written (so they cannot drift).
deploy_script() {
  awk '/^```bash deploy$/{on=1; next} /^```$/{if(on){on=0; print ""}; next} on{print}' "$ROOT/docs/deploy.md"
}

write_apache_conf() {
  local conf=$VAR/apache/httpd.conf m=/usr/lib/apache2/modules php
  php=$(ls $m/libphp*.so | head -1)
  mkdir -p "$VAR/apache"
  cat >"$conf" <<CONF
# The test project's own Apache instance: 127.0.0.1 only, its own PID file and logs (a system Apache is untouched).
ServerName 127.0.0.1
Listen 127.0.0.1:$HTTP_PORT
PidFile $RUN/apache.pid
DefaultRuntimeDir $VAR/apache
ErrorLog $VAR/apache/error.log
LogFormat "%h %t \"%r\" %>s %b" common
CustomLog $VAR/apache/access.log common
LoadModule mpm_prefork_module $m/mod_mpm_prefork.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule authz_host_module $m/mod_authz_host.so
LoadModule alias_module $m/mod_alias.so
LoadModule cgi_module $m/mod_cgi.so
LoadModule mime_module $m/mod_mime.so
LoadModule dir_module $m/mod_dir.so
LoadModule env_module $m/mod_env.so
LoadModule php_module $php
StartServers 2
MinSpareServers 1
MaxSpareServers 4
User www-data
Group www-data
TypesConfig /etc/mime.types
DirectoryIndex index.php index.html
<FilesMatch "\.php\$">
    SetHandler application/x-httpd-php
</FilesMatch>
<Directory />
    AllowOverride None
    Require all denied
</Directory>
Include $PROJECT_ROOT/$PROJECT.httpd.conf
CONF
  echo "$conf"
}

write_client_files() {  # the client's own data dir: prefs that compute while the machine is busy
  local d=$VAR/client
  rm -rf "$d"; mkdir -p "$d"
  cat >"$d/cc_config.xml" <<'XML'
<cc_config><log_flags><task>1</task><file_xfer>1</file_xfer><sched_ops>1</sched_ops></log_flags>
<options><allow_remote_gui_rpc>0</allow_remote_gui_rpc><skip_cpu_benchmarks>1</skip_cpu_benchmarks>
<ncpus>2</ncpus><no_gpus>1</no_gpus><fetch_minimal_work>0</fetch_minimal_work></options></cc_config>
XML
  cat >"$d/global_prefs_override.xml" <<'XML'
<global_preferences>
  <run_on_batteries>1</run_on_batteries><run_if_user_active>1</run_if_user_active>
  <run_gpu_if_user_active>1</run_gpu_if_user_active><idle_time_to_run>0</idle_time_to_run>
  <suspend_cpu_usage>0</suspend_cpu_usage><suspend_if_no_recent_input>0</suspend_if_no_recent_input>
  <cpu_usage_limit>100</cpu_usage_limit><max_ncpus_pct>100</max_ncpus_pct>
  <leave_apps_in_memory>0</leave_apps_in_memory><disk_interval>5</disk_interval>
  <work_buf_min_days>0.01</work_buf_min_days><work_buf_additional_days>0.01</work_buf_additional_days>
  <cpu_scheduling_period_minutes>60</cpu_scheduling_period_minutes>
  <disk_max_used_gb>20</disk_max_used_gb><disk_min_free_gb>0.5</disk_min_free_gb><disk_max_used_pct>90</disk_max_used_pct>
  <ram_max_used_busy_pct>90</ram_max_used_busy_pct><ram_max_used_idle_pct>90</ram_max_used_idle_pct>
  <dont_verify_images>0</dont_verify_images><network_wifi_only>0</network_wifi_only>
</global_preferences>
XML
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/gui_rpc_auth.cfg"
  chown -R "$CLIENT_USER:$CLIENT_USER" "$d"
  chmod 0750 "$d"; chmod 0640 "$d/gui_rpc_auth.cfg"
}

boinccmd_() { boinccmd --host "127.0.0.1:$RPC_PORT" --passwd "$(cat "$VAR/client/gui_rpc_auth.cfg")" "$@"; }

start_client() {
  # A simple command in the background (not the as_user function, which would fork a subshell): setpriv and env
  # exec, so $! is the client's own PID.
  setpriv --reuid="$CLIENT_USER" --regid="$CLIENT_USER" --init-groups env -i HOME="$VAR/client" LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin boinc --dir "$VAR/client" --gui_rpc_port "$RPC_PORT" \
    --allow_multiple_clients --redirectio >/dev/null 2>&1 &
  echo $! >"$RUN/client.pid"
  for _ in $(seq 1 100); do boinccmd_ --get_cc_status >/dev/null 2>&1 && return 0; sleep 0.3; done
  log "the client did not answer on 127.0.0.1:$RPC_PORT; see $VAR/client/stdoutdae.txt"; exit 1
}

write_env() {
  cat >"$VAR/env" <<ENV
BOINC_BUILD=$BUILD
BOINC_PROJECT=$PROJECT
BOINC_PROJECT_USER=$PROJECT_USER
BOINC_PROJECT_ROOT=$PROJECT_ROOT
BOINC_URL=$URL_BASE/$PROJECT/
BOINC_DB_URL=mysql+mysqldb://$DB_USER:$DB_PASSWD@$DB_HOST/$BOINC_DB
OPENASTRO_DATABASE_URL=$OPENASTRO_DATABASE_URL
OPENASTRO_VAR_DIR=$OPENASTRO_VAR_DIR
BOINC_OA_VENV=$OA_VENV
BOINC_CLIENT_DIR=$VAR/client
BOINC_CLIENT_RPC=127.0.0.1:$RPC_PORT
BOINC_CLIENT_PASSWD=$(cat "$VAR/client/gui_rpc_auth.cfg")
BOINC_CLIENT_PIDFILE=$RUN/client.pid
ENV
}

start() {
  [ "$(id -u)" -eq 0 ] || { log "start needs root (it creates the project user and runs programs as it)"; exit 2; }
  if alive "$RUN/apache.pid" || alive "$RUN/client.pid"; then log "already running (stop first)"; cat "$VAR/env"; return 0; fi
  BUILD=$(build)
  mkdir -p "$RUN"; chmod 0755 "$BASE" "$VAR"
  local mariadb_was_up=1 url
  mariadb-admin --protocol=socket --socket="$ROOT/var/mariadb-test/mysqld.sock" -uroot ping >/dev/null 2>&1 || mariadb_was_up=0
  url=$("$ROOT/scripts/mariadb-test-server.sh" | tail -1)
  [ "$mariadb_was_up" = 1 ] || cp "$ROOT/var/mariadb-test/mysqld.pid" "$RUN/mariadb.pid"
  local dbport; dbport=$(echo "$url" | sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#')
  HTTP_PORT=$(free_port "${OPENASTRO_TEST_BOINC_HTTP_PORT:-18080}")
  RPC_PORT=$(free_port "${OPENASTRO_TEST_BOINC_RPC_PORT:-31500}")
  # The variables docs/deploy.md's steps use:
  export BOINC_SRC=$BUILD PROJECT PROJECT_USER
  export PROJECT_ROOT=/home/$PROJECT_USER/projects/$PROJECT
  export URL_BASE=http://127.0.0.1:$HTTP_PORT
  export DB_HOST=127.0.0.1:$dbport DB_USER=openastro DB_PASSWD=openastro BOINC_DB=${PROJECT}_boinc
  export OPENASTRO_DATABASE_URL=mysql+mysqldb://openastro:openastro@127.0.0.1:$dbport/${PROJECT}_openastro
  export OA_SRC=$VAR/src
  copy_source "$OA_SRC"
  export OA_VENV=${OPENASTRO_TEST_BOINC_VENV:-$VAR/venv}
  export OPENASTRO_VAR_DIR=/home/$PROJECT_USER/openastro-var
  export WRAPPER=$(ls "$BUILD"/samples/wrapper/wrapper_26019_* | head -1)
  export APP_BUNDLE=${OPENASTRO_TEST_APP_BUNDLE:-}
  export APPS_STAGING=$VAR/staging
  # A fresh project each start: the previous one (daemons stopped by `stop`) and its databases go.
  rm -rf "$PROJECT_ROOT" "$OPENASTRO_VAR_DIR" "$APPS_STAGING"
  mariadb --protocol=socket --socket="$ROOT/var/mariadb-test/mysqld.sock" -uroot \
    -e "DROP DATABASE IF EXISTS \`$BOINC_DB\`; DROP DATABASE IF EXISTS \`${PROJECT}_openastro\`; CREATE DATABASE \`${PROJECT}_openastro\` CHARACTER SET utf8mb4"
  deploy_script >"$VAR/deploy.sh"
  log "deploying the project as docs/deploy.md says (log: $VAR/deploy.log)"
  bash -euo pipefail "$VAR/deploy.sh" >"$VAR/deploy.log" 2>&1 || { tail -30 "$VAR/deploy.log" >&2; log "deploy failed"; exit 1; }
  start_apache
  write_client_files
  start_client
  local email=test@example.invalid pw=test-password auth
  boinccmd_ --create_account "$URL_BASE/$PROJECT/" "$email" "$pw" tester >"$VAR/create_account.out" 2>&1 || true
  auth=$(boinccmd_ --lookup_account "$URL_BASE/$PROJECT/" "$email" "$pw" | sed -n 's/^account key: //p')
  [ -n "$auth" ] || { cat "$VAR/create_account.out" >&2; log "no account key from $URL_BASE/$PROJECT/"; exit 1; }
  boinccmd_ --project_attach "$URL_BASE/$PROJECT/" "$auth"
  write_env
  cat "$VAR/env"
}

start_apache() {
  # called as "$0 _apache" with the exported variables above
  conf=$(write_apache_conf)
  apache2 -f "$conf" -t >/dev/null 2>&1 || { apache2 -f "$conf" -t; exit 1; }
  apache2 -f "$conf" -k start
  for _ in $(seq 1 100); do alive "$RUN/apache.pid" && ! port_free "$HTTP_PORT" && break; sleep 0.2; done
  alive "$RUN/apache.pid" || { tail -20 "$VAR/apache/error.log" >&2; log "apache did not start"; exit 1; }
}

stop() {
  stop_pidfile "$RUN/client.pid" 20
  local proot=/home/$PROJECT_USER/projects/$PROJECT
  if [ -x "$proot/bin/stop" ]; then
    (cd "$proot" && as_user "$PROJECT_USER" bin/stop >/dev/null 2>&1) || true
    for f in "$proot"/pid_*/*.pid; do [ -f "$f" ] && stop_pidfile "$f" 10; done
  fi
  stop_pidfile "$RUN/apache.pid" 10
  stop_pidfile "$RUN/mariadb.pid" 30
  echo "stopped"
}

status() {
  local rc=0
  for f in client apache mariadb; do
    if alive "$RUN/$f.pid"; then echo "$f running (pid $(cat "$RUN/$f.pid"))"; else echo "$f not running"; [ "$f" = mariadb ] || rc=1; fi
  done
  for f in /home/$PROJECT_USER/projects/$PROJECT/pid_*/*.pid; do
    [ -f "$f" ] && { alive "$f" && echo "daemon $(basename "$f" .pid) running" || echo "daemon $(basename "$f" .pid) not running"; }
  done
  return $rc
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  client-stop) stop_pidfile "$RUN/client.pid" 30 ;;   # the client alone (tests: stopped mid-task, restarted)
  client-start)
    RPC_PORT=$(sed -n 's/^BOINC_CLIENT_RPC=127.0.0.1://p' "$VAR/env")
    alive "$RUN/client.pid" || start_client ;;
  stop) stop ;;
  status) status ;;
  env) cat "$VAR/env" ;;
  deploy-script) deploy_script ;;   # docs/deploy.md's steps as the script start runs
  *) echo "usage: $0 build|start|stop|status|env" >&2; exit 2 ;;
esac
