<?php
// Loads the configuration and the core libraries.
$GLOBALS['acme_config'] = require ACME_ROOT . '/config/defaults.php';
if (is_file(ACME_ROOT . '/config/local.php')) {
    $GLOBALS['acme_config'] = array_replace($GLOBALS['acme_config'], require ACME_ROOT . '/config/local.php');
}

function acme_config(string $key, $default = null) {
    return $GLOBALS['acme_config'][$key] ?? $default;
}

require ACME_ROOT . '/lib/db.php';
require ACME_ROOT . '/lib/session.php';
require ACME_ROOT . '/lib/template.php';
require ACME_ROOT . '/lib/redirect.php';
