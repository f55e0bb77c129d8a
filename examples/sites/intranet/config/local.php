<?php
// intranet: site settings.
return [
    'site_name' => 'Acme Intranet',
    'db_dsn' => 'pgsql:host=10.20.0.5;dbname=intranet',
    'db_user' => 'intranet',
    'db_pass' => getenv('INTRANET_DB_PASSWORD'),
];
