<?php
// staging-b: staging settings; throwaway database, debug output on.
return [
    'site_name' => 'Acme CMS (staging-b)',
    'db_dsn' => 'sqlite:/var/lib/acme-staging/staging-b.sqlite',
    'debug' => true,
];
