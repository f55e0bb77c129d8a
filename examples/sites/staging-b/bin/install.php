<?php
// Command-line installer (replaces the 4.x web installer): php bin/install.php ADMIN
if (PHP_SAPI !== 'cli') {
    http_response_code(404);
    exit;
}
define('ACME_ROOT', dirname(__DIR__));
require ACME_ROOT . '/lib/bootstrap.php';

$name = $argv[1] ?? 'admin';
$password = bin2hex(random_bytes(12));
$db = acme_db();
$db->exec('CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, slug TEXT UNIQUE, title TEXT, excerpt TEXT, body TEXT)');
$db->exec('CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, hash TEXT)');
$db->exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
$db->exec('INSERT INTO schema_version (version) VALUES (5)');
$db->prepare('INSERT INTO users (name, hash) VALUES (?, ?)')->execute([$name, password_hash($password, PASSWORD_DEFAULT)]);
echo "Created $name with password $password\n";
