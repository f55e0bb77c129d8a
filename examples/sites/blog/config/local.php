<?php
// blog: site settings.
return [
    'site_name' => 'Acme Engineering Blog',
    'db_dsn' => 'sqlite:/var/lib/acme-blog/blog.sqlite',
];
