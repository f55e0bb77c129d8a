<?php
// One shared PDO connection.
function acme_db(): PDO {
    static $pdo = null;
    if ($pdo === null) {
        $pdo = new PDO(acme_config('db_dsn'), acme_config('db_user'), acme_config('db_pass'));
        $pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
    }
    return $pdo;
}
