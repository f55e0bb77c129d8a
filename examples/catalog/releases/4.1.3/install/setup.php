<?php
// First-run web installer: creates the tables and the administrator account.
define('ACME_ROOT', dirname(__DIR__));
require ACME_ROOT . '/lib/bootstrap.php';

if (!acme_config('installer_enabled')) {
    http_response_code(403);
    exit('The installer is disabled.');
}
$db = acme_db();
$db->exec('CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, title TEXT, excerpt TEXT, body TEXT)');
$db->exec('CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, hash TEXT)');
$hash = password_hash($_POST['password'] ?? '', PASSWORD_DEFAULT);
$db->prepare('INSERT OR REPLACE INTO users (id, name, hash) VALUES (1, ?, ?)')->execute([$_POST['admin'] ?? 'admin', $hash]);
echo 'Acme CMS is installed.';
