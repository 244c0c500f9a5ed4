//! PostgreSQL metrics against a real server, side by side with the Debian
//! prometheus-postgres-exporter.

use steward_tests::postgres::Postgres;

#[test]
fn harness_starts_postgres_with_password_auth() {
    let mut pg = Postgres::start().expect("start postgres");
    assert_eq!(pg.psql("select 1+1").unwrap(), "2");
    pg.kill();
    pg.restart().expect("restart postgres");
    assert_eq!(pg.psql("select 2+2").unwrap(), "4");
}
