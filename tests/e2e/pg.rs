//! A real PostgreSQL for tests: a throwaway cluster (`initdb` + `pg_ctl`) on 127.0.0.1 and a
//! free port, removed when dropped; or, for tests that do not need to control the server, the
//! one `BACKFLOW_TEST_PG` names (`postgres://USER[:PASSWORD]@127.0.0.1:PORT/DB`), in a
//! database of its own.
//!
//! Roles every server gets (all may read everything in `public`):
//! `reader`/`reader-secret` (SCRAM), and on throwaway clusters, whose `pg_hba.conf` the tests
//! write, `trust_user` (trust), `password_user`/`plain-secret` (cleartext password) and
//! `md5_user`/`md5-secret` (MD5), and `tls_user`/`tls-secret` (SCRAM, TLS connections only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pg {
    pub host: String,
    pub port: u16,
    pub database: String,
    admin_user: String,
    admin_password: Option<String>,
    cluster: Option<Cluster>,
    /// A database created on an external server, dropped at the end.
    external_database: bool,
}

struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// Where `initdb`, `pg_ctl` and `psql` are: `BACKFLOW_PG_BIN`, the newest
/// /usr/lib/postgresql/*/bin, or PATH.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("BACKFLOW_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return newest;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&which.stdout).trim().to_string();
    assert!(!path.is_empty(), "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql (scripts/test does) or set BACKFLOW_PG_BIN");
    Path::new(&path).parent().unwrap().to_path_buf()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command for a server binary; PostgreSQL refuses to run as root, so as root it runs as
/// the `postgres` user (which Debian's package creates).
fn server_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// `BACKFLOW_TEST_PG` if set, a throwaway cluster otherwise.
    pub fn any() -> Pg {
        match std::env::var("BACKFLOW_TEST_PG") {
            Ok(url) if !url.is_empty() => Pg::external(&url),
            _ => Pg::throwaway(),
        }
    }

    /// A fresh cluster this test owns (it may stop and restart it).
    pub fn throwaway() -> Pg {
        Pg::throwaway_with(None)
    }

    /// A fresh cluster with `ssl = on`, its server certificate (for 127.0.0.1) signed by a
    /// throwaway CA; returns the CA certificate's PEM too. Role `tls_user`/`tls-secret` may
    /// connect only over TLS.
    pub fn throwaway_tls() -> (Pg, String) {
        let certs = tempfile::tempdir().unwrap();
        let c = certs.path();
        let openssl = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(c);
            run(cmd, &format!("openssl {}", args.join(" ")));
        };
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-nodes",
            "-subj",
            "/CN=backflow-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-new",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(c.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "ext.cnf",
        ]);
        let ca = std::fs::read_to_string(c.join("ca.crt")).unwrap();
        let pg = Pg::throwaway_with(Some((
            std::fs::read(c.join("server.crt")).unwrap(),
            std::fs::read(c.join("server.key")).unwrap(),
        )));
        (pg, ca)
    }

    fn throwaway_with(tls: Option<(Vec<u8>, Vec<u8>)>) -> Pg {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("backflow-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the cluster directory to postgres",
            );
        }
        let data = dir.path().join("data");
        let mut initdb = server_command(&bin, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        let port = free_port();
        let hba = "\
hostnossl all tls_user 127.0.0.1/32 reject
host all postgres 127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all password_user 127.0.0.1/32 password
host all md5_user 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 30\n"
        ));
        if let Some((cert, key)) = &tls {
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            let mut chmod = Command::new("chmod");
            chmod.arg("600").arg(data.join("server.key"));
            run(chmod, "chmod server.key");
            if is_root() {
                let mut chown = Command::new("chown");
                chown
                    .arg("postgres:postgres")
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"));
                run(chown, "chown the server certificate");
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        let pg = Pg {
            host: "127.0.0.1".into(),
            port,
            database: "postgres".into(),
            admin_user: "postgres".into(),
            admin_password: None,
            cluster: Some(Cluster { dir, bin }),
            external_database: false,
        };
        pg.start_server();
        pg.admin(
            "postgres",
            "CREATE ROLE reader LOGIN PASSWORD 'reader-secret';
             CREATE ROLE trust_user LOGIN;
             CREATE ROLE password_user LOGIN PASSWORD 'plain-secret';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE tls_user LOGIN PASSWORD 'tls-secret';
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC;",
        );
        pg
    }

    fn external(url: &str) -> Pg {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .expect("BACKFLOW_TEST_PG must be postgres://USER[:PASSWORD]@HOST:PORT[/DB]");
        let (auth, hostpart) = rest.rsplit_once('@').expect("BACKFLOW_TEST_PG needs USER@");
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (u.to_string(), Some(p.to_string())),
            None => (auth.to_string(), None),
        };
        let hostport = hostpart.split('/').next().unwrap();
        let (host, port) = hostport
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.parse().unwrap()))
            .unwrap_or((hostport.to_string(), 5432));
        assert!(
            host == "127.0.0.1" || host == "localhost",
            "tests only use loopback addresses; BACKFLOW_TEST_PG points at {host}"
        );
        let database = format!("backflow_test_{}_{}", std::process::id(), free_port());
        let pg = Pg {
            host: "127.0.0.1".into(),
            port,
            database: database.clone(),
            admin_user: user,
            admin_password: password,
            cluster: None,
            external_database: true,
        };
        pg.admin("postgres", &format!("CREATE DATABASE {database}"));
        pg.admin(
            &database,
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') THEN CREATE ROLE reader LOGIN PASSWORD 'reader-secret'; END IF; END $$;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC;",
        );
        pg
    }

    fn psql_command(&self, database: &str) -> Command {
        let psql = match &self.cluster {
            Some(c) if c.bin.join("psql").is_file() => c.bin.join("psql"),
            _ => PathBuf::from("psql"),
        };
        let mut c = Command::new(psql);
        c.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.admin_user,
            "-d",
            database,
        ]);
        if let Some(p) = &self.admin_password {
            c.env("PGPASSWORD", p);
        }
        c
    }

    fn admin(&self, database: &str, sql: &str) -> String {
        let out = self
            .psql_command(database)
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs SQL as the superuser in the test's database; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.admin(&self.database, sql)
    }

    /// A psql session kept open (for holding locks); SQL is written to its stdin.
    pub fn session(&self) -> std::process::Child {
        self.psql_command(&self.database)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql")
    }

    fn start_server(&self) {
        let c = self.cluster.as_ref().expect("a throwaway cluster");
        let mut start = server_command(&c.bin, "pg_ctl");
        start
            .arg("-D")
            .arg(c.dir.path().join("data"))
            .arg("-l")
            .arg(c.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
    }

    /// Stops the server, terminating sessions (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        let c = self
            .cluster
            .as_ref()
            .expect("only a throwaway cluster can be stopped");
        let mut stop = server_command(&c.bin, "pg_ctl");
        stop.arg("-D")
            .arg(c.dir.path().join("data"))
            .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        run(stop, "pg_ctl stop");
    }

    pub fn restart(&self) {
        self.start_server();
    }

    /// A `[sources.pg]` table connecting as `user` with `password`, granted exactly this server.
    pub fn source_toml(&self, user: &str, password: Option<&str>) -> String {
        let password = password
            .map(|p| format!(", password = \"{p}\""))
            .unwrap_or_default();
        format!(
            "[sources.pg]\nplugin = \"postgres\"\nconfig = {{ host = \"{}\", port = {}, user = \"{user}\", database = \"{}\"{password} }}\ngrants.network = [\"{}:{}\"]\n",
            self.host, self.port, self.database, self.host, self.port
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let mut stop = server_command(&c.bin, "pg_ctl");
            stop.arg("-D")
                .arg(c.dir.path().join("data"))
                .args(["-m", "immediate", "stop"]);
            let _ = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        } else if self.external_database {
            let _ = self
                .psql_command("postgres")
                .args([
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
                ])
                .output();
        }
    }
}
