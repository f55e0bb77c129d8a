<?php
// Built-in defaults. Override them in config/local.php, never here.
return [
    'site_name' => 'Acme CMS',
    'theme' => 'default',
    'db_dsn' => 'sqlite:' . dirname(__DIR__) . '/data/acme.sqlite',
    'db_user' => null,
    'db_pass' => null,
    'debug' => false,
    'schema' => 5,
];
