<?php
// shop-eu: site settings (not managed by sitekeeper: listed under paths.preserve).
return [
    'site_name' => 'Acme Retail EU',
    'theme' => 'custom',
    'db_dsn' => 'mysql:host=db1.internal;dbname=shop_eu;charset=utf8mb4',
    'db_user' => 'shop_eu',
    'db_pass' => getenv('SHOP_EU_DB_PASSWORD'),
];
