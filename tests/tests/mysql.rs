//! MySQL/MariaDB metrics against a real MariaDB, side by side with the Debian
//! prometheus-mysqld-exporter.

use steward_tests::mariadb::Mariadb;

#[test]
fn harness_starts_mariadb_with_root_password() {
    let mut db = Mariadb::start().expect("start mariadb");
    assert_eq!(db.mysql("select 1+1").unwrap(), "2");
    let tcp = |pw: &str| {
        std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                "-uroot",
                "-N",
                "-e",
                "select 3",
            ])
            .arg(format!("-P{}", db.port))
            .env("MYSQL_PWD", pw)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(tcp(&db.root_password), "root over TCP with its password");
    assert!(
        !tcp("wrong"),
        "root over TCP with a wrong password must fail"
    );
    db.kill();
    db.restart().expect("restart mariadb");
    assert_eq!(db.mysql("select 2+2").unwrap(), "4");
}
