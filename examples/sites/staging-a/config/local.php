<?php
// staging-a: staging settings; throwaway database, debug output on.
return [
    'site_name' => 'Acme CMS (staging-a)',
    'db_dsn' => 'sqlite:/var/lib/acme-staging/staging-a.sqlite',
    'debug' => true,
];
