<?php
// Release hook of 5.0.0 (post_apply): migrates the database schema to version 5.
if (PHP_SAPI !== 'cli') {
    http_response_code(404);
    exit;
}
define('ACME_ROOT', __DIR__);
require ACME_ROOT . '/lib/bootstrap.php';

$db = acme_db();
$db->exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
if ((int) $db->query('SELECT MAX(version) FROM schema_version')->fetchColumn() < 5) {
    $db->exec('ALTER TABLE pages ADD COLUMN slug TEXT');
    $db->exec('CREATE UNIQUE INDEX IF NOT EXISTS pages_slug ON pages (slug)');
    $db->exec('INSERT INTO schema_version (version) VALUES (5)');
}
echo "Database schema is at version 5.\n";
